"""The scheduler: one fair queue per model, each request leased to the least-loaded ready replica.

While a model's replicas are all busy, its waiting requests are served across keys in
proportion to their weights, first come first served within a key (gateway/pool/fair_queue.py).
A key at its max_concurrent waits its turn without holding the others up.

Invariant: a model's queue holds a request only while no replica is free or its key is at
max_concurrent, so a new request never overtakes one of its own key queued ahead of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..config.file import KeyConfig
from ..errors import QueueFull, QueueTimeout, Unavailable
from ..replicas.lifecycle import StateChange
from ..replicas.registry import Registry, Replica, ReplicaState
from .affinity import PrefixTable
from .fair_queue import FairQueue

__all__ = ["Lease", "QueuePolicy", "Scheduler", "pick_replica"]


@dataclass(frozen=True)
class QueuePolicy:
    max_queue: int
    queue_timeout: float
    affinity: bool = False  # route by prompt prefix (gateway/pool/affinity.py), else least busy
    scales: bool = False  # its replica count moves with demand: waiting requests are told


def pick_replica(replicas: Sequence[Replica]) -> Replica | None:
    """The free replica least loaded for its size: in flight / capacity (a remote server with 8
    slots and 2 requests is less busy than a local worker with 2 and 1), lowest index on ties."""
    free = [r for r in replicas if r.free]
    return min(free, key=lambda r: r.in_flight / r.capacity) if free else None


class Lease:
    """The right to send one request of `key` to `replica`; release it exactly once."""

    __slots__ = ("_scheduler", "key", "released", "replica")

    def __init__(self, scheduler: Scheduler, replica: Replica, key: KeyConfig):
        self._scheduler = scheduler
        self.replica = replica
        self.key = key
        self.released = False

    def release(self, failed: str | None = None) -> None:
        """Hand the replica back; `failed` says why it could not be reached, if it could not."""
        if not self.released:
            self.released = True
            self._scheduler.release(self, failed)


Waiter = asyncio.Future[Lease]
Prefix = Sequence[bytes]  # a prompt's chained block hashes (gateway/pool/affinity.py)


class Scheduler:
    """Owns the per-model queues; asks the registry for replicas and records their load."""

    def __init__(self, registry: Registry, policies: Mapping[str, QueuePolicy]):
        self._registry = registry
        self._policies = dict(policies)
        self._queues: dict[str, FairQueue[Waiter]] = {m: FairQueue() for m in policies}
        self._running: dict[str, int] = {}  # requests in flight by key name
        self._keys: dict[str, KeyConfig] = {}  # the keys of queued requests, by name
        self._prefixes: dict[Waiter, Prefix] = {}  # queued requests' prompt blocks (affinity)
        self.table = PrefixTable()  # the blocks each replica was sent (affinity models)
        # Told of what is recorded for a replica every gateway reaches at the same address (the
        # affinity sync, with Redis): (its api, the blocks).
        self.share: Callable[[str, Prefix], None] | None = None
        # Told of each request that has to wait, by model (the scaler may start a replica).
        self.demand: Callable[[str], None] | None = None
        registry.on_change(self._on_change)

    def set_policy(self, model: str, policy: QueuePolicy) -> None:
        """Add a model, or change its queue limits (a reload): waiters keep their place."""
        self._policies[model] = policy
        self._queues.setdefault(model, FairQueue())

    def remove_model(self, model: str) -> None:
        """Forget a removed model; anything still queued for it gets a 503."""
        self._fail_all(
            self._queues.pop(model),
            Unavailable(f"Model '{model}' was removed from the config.", retry_after=1),
        )
        del self._policies[model]

    def queued(self, model: str) -> int:
        return len(self._queues[model])

    def refuse(self, model: str, error: Unavailable) -> None:
        """Answer every request waiting for `model` with `error` (its replica cannot start)."""
        if (queue := self._queues.get(model)) is not None:
            self._fail_all(queue, error)

    def running(self, key: KeyConfig) -> int:
        """The key's requests holding a replica now."""
        return self._running.get(key.name, 0)

    def queued_total(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def try_acquire(
        self, model: str, key: KeyConfig, prefix: Prefix = (), avoid: Replica | None = None
    ) -> Lease | None:
        """A lease at once if a replica (other than `avoid`) is free, nobody is queued and `key`
        may start another request; else None. `prefix`: the prompt's block hashes, for an
        affinity model."""
        queue = self._queues.get(model)
        if queue is None:
            raise Unavailable(f"Model '{model}' was removed from the config.", retry_after=1)
        if queue or not self._may_start(key):
            return None
        replica = self._pick(model, prefix, avoid)
        return None if replica is None else self._lease(replica, key, prefix)

    async def acquire(
        self,
        model: str,
        key: KeyConfig,
        first: bool = False,
        queued: Callable[[int], None] | None = None,
        prefix: Prefix = (),
        avoid: Replica | None = None,
    ) -> Lease:
        """Wait for a free replica of `model`; raise QueueFull, QueueTimeout or Unavailable.

        `first` puts the request ahead of every other (a retry keeps its place in line);
        `avoid` is a replica not to take at once (the one a retry failed on).
        `queued` is told how many requests were ahead when it had to wait.
        """
        lease = self.try_acquire(model, key, prefix, avoid)
        if lease is not None:
            return lease
        queue = self._queues[model]
        if not first:
            self._check_admission(model, queue, key)
        waiter: Waiter = asyncio.get_running_loop().create_future()
        self._keys[key.name] = key
        if prefix:
            self._prefixes[waiter] = prefix
        ahead = queue.push(key.name, key.weight, waiter, first)
        self._dispatch(model)
        if self.demand is not None and self._policies[model].scales and not waiter.done():
            self.demand(model)
        if queued is not None and not waiter.done():
            queued(ahead)
        lease = None
        try:
            async with asyncio.timeout(self._policies[model].queue_timeout):
                lease = await waiter
            return lease
        except TimeoutError:
            raise QueueTimeout(
                f"No replica of '{model}' became free within "
                f"{self._policies[model].queue_timeout:g} s; try again later.",
                retry_after=1,
            ) from None
        finally:
            if lease is None:
                self._abandon(queue, waiter)

    def release(self, lease: Lease, failed: str | None = None) -> None:
        replica, name = lease.replica, lease.key.name
        self._running[name] -= 1
        if failed is not None:
            self._registry.mark_unhealthy(replica, failed)
        self._registry.end(replica)
        if lease.key.max_concurrent is not None and self._queues.get(replica.model):
            self._dispatch(replica.model)  # the key may start a waiting request now

    def _pick(self, model: str, prefix: Prefix, avoid: Replica | None = None) -> Replica | None:
        """The replica a request of `model` goes to now, if one (other than `avoid`) is free."""
        replicas = self._registry.replicas(model)
        if avoid is not None:
            replicas = [r for r in replicas if r is not avoid]
        if not self._policies[model].affinity:
            return pick_replica(replicas)
        return self.table.pick([r for r in replicas if r.free], prefix)

    def _lease(self, replica: Replica, key: KeyConfig, prefix: Prefix = ()) -> Lease:
        if prefix:  # it will hold this prompt's blocks
            self.table.record(replica.api, prefix)
            if self.share is not None and replica.shared:
                self.share(replica.api, prefix)
        self._registry.begin(replica)
        self._running[key.name] = self._running.get(key.name, 0) + 1
        return Lease(self, replica, key)

    def _may_start(self, key: KeyConfig) -> bool:
        limit = key.max_concurrent
        return limit is None or self._running.get(key.name, 0) < limit

    def check_admission(self, model: str, key: KeyConfig) -> None:
        """Raise what queueing a request of `key` for `model` now would: QueueFull or
        Unavailable."""
        self._check_admission(model, self._queues[model], key)

    def _check_admission(self, model: str, queue: FairQueue[Waiter], key: KeyConfig) -> None:
        if (unavailable := self._unavailable(model)) is not None:
            raise unavailable
        if not queue.has_room(key.name, key.weight, self._policies[model].max_queue):
            raise QueueFull(
                f"Too many requests queued for model '{model}'; retry shortly.", retry_after=1
            )

    def _unavailable(self, model: str) -> Unavailable | None:
        """A 503 when no replica of `model` can serve soon: every one failed, or is starting
        again after a failed start (its backoff and reload would outlast any queue timeout)."""
        replicas = self._registry.replicas(model)
        if not replicas or not all(r.failing for r in replicas):
            return None
        # Why (a load error: paths, library messages) is for ops: the log and /admin/workers.
        return Unavailable(
            f"Model '{model}' is not available: its replicas failed to start "
            "(the gateway's log and /admin/workers say why).",
            retry_after=10,
            code="model_unavailable",
        )

    def _abandon(self, queue: FairQueue[Waiter], waiter: Waiter) -> None:
        """Leave the queue (timeout or client gone); hand back a lease granted meanwhile."""
        queue.remove(waiter)
        self._prefixes.pop(waiter, None)
        if not waiter.done():
            waiter.cancel()
        elif not waiter.cancelled() and waiter.exception() is None:
            waiter.result().release()

    def _on_change(self, change: StateChange) -> None:
        # Ready: room for a queued request. Failed or starting again: maybe nothing can serve.
        if change.new in _DISPATCH_ON:
            self._dispatch(change.model)

    def _dispatch(self, model: str) -> None:
        queue = self._queues.get(model)  # None once a reload removed the model
        if queue and (unavailable := self._unavailable(model)) is not None:
            self._fail_all(queue, unavailable)
        while queue:
            if not any(r.free for r in self._registry.replicas(model)):
                return
            served = queue.pop(lambda name: self._may_start(self._keys[name]))
            if served is None:
                return  # every waiting key is at its max_concurrent
            name, waiter = served
            prefix = self._prefixes.pop(waiter, ())
            replica = self._pick(model, prefix)
            assert replica is not None  # one is free, and both ways of picking take a free one
            if not waiter.done():  # cancelled, its task not yet run to leave the queue
                waiter.set_result(self._lease(replica, self._keys[name], prefix))

    @staticmethod
    def _fail_all(queue: FairQueue[Waiter], error: Unavailable) -> None:
        while (served := queue.pop()) is not None:
            if not served[1].done():
                served[1].set_exception(error)


_DISPATCH_ON = frozenset({ReplicaState.READY, ReplicaState.FAILED, ReplicaState.STARTING})
