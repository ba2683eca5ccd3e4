"""The scheduler: one FIFO queue per model, each request leased to the least-loaded ready replica.

Invariant: a model's queue is non-empty only while none of its replicas is free,
so a new request never overtakes a queued one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import QueueFull, QueueTimeout, Unavailable
from .lifecycle import StateChange
from .registry import Registry, Replica, ReplicaState

__all__ = ["Lease", "QueuePolicy", "Scheduler", "pick_replica"]


@dataclass(frozen=True)
class QueuePolicy:
    max_queue: int
    queue_timeout: float


def pick_replica(replicas: Sequence[Replica]) -> Replica | None:
    """The free replica with the fewest requests in flight (lowest index on ties)."""
    free = [r for r in replicas if r.free]
    return min(free, key=lambda r: r.in_flight) if free else None


class Lease:
    """The right to send one request to `replica`; release it exactly once."""

    __slots__ = ("_scheduler", "released", "replica")

    def __init__(self, scheduler: Scheduler, replica: Replica):
        self._scheduler = scheduler
        self.replica = replica
        self.released = False

    def release(self, failed: str | None = None) -> None:
        """Hand the replica back; `failed` says why it could not be reached, if it could not."""
        if not self.released:
            self.released = True
            self._scheduler.release(self.replica, failed)


class Scheduler:
    """Owns the per-model queues; asks the registry for replicas and records their load."""

    def __init__(self, registry: Registry, policies: Mapping[str, QueuePolicy]):
        self._registry = registry
        self._policies = dict(policies)
        self._queues: dict[str, deque[asyncio.Future[Lease]]] = {m: deque() for m in policies}
        registry.on_change(self._on_change)

    def set_policy(self, model: str, policy: QueuePolicy) -> None:
        """Add a model, or change its queue limits (a reload): waiters keep their place."""
        self._policies[model] = policy
        self._queues.setdefault(model, deque())

    def remove_model(self, model: str) -> None:
        """Forget a removed model; anything still queued for it gets a 503."""
        for waiter in self._queues.pop(model):
            if not waiter.done():
                waiter.set_exception(
                    Unavailable(f"Model '{model}' was removed from the config.", retry_after=1)
                )
        del self._policies[model]

    def queued(self, model: str) -> int:
        return len(self._queues[model])

    def queued_total(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def try_acquire(self, model: str) -> Lease | None:
        """A lease at once if a replica is free and nobody is queued ahead; else None."""
        queue = self._queues.get(model)
        if queue is None:
            raise Unavailable(f"Model '{model}' was removed from the config.", retry_after=1)
        if queue:
            return None
        replica = pick_replica(self._registry.replicas(model))
        return None if replica is None else self._lease(replica)

    async def acquire(self, model: str, first: bool = False) -> Lease:
        """Wait for a free replica of `model`; raise QueueFull, QueueTimeout or Unavailable.

        `first` puts the request at the head of the queue (a retry keeps its place in line).
        """
        lease = self.try_acquire(model)
        if lease is not None:
            return lease
        queue = self._queues[model]
        if not first:
            self._check_admission(model, queue)
        waiter: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        if first:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)
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

    def release(self, replica: Replica, failed: str | None = None) -> None:
        if failed is not None:
            self._registry.mark_unhealthy(replica, failed)
        self._registry.end(replica)

    def _lease(self, replica: Replica) -> Lease:
        self._registry.begin(replica)
        return Lease(self, replica)

    def _check_admission(self, model: str, queue: deque[asyncio.Future[Lease]]) -> None:
        if (unavailable := self._unavailable(model)) is not None:
            raise unavailable
        if len(queue) >= self._policies[model].max_queue:
            raise QueueFull(
                f"Too many requests queued for model '{model}'; retry shortly.", retry_after=1
            )

    def _unavailable(self, model: str) -> Unavailable | None:
        """A 503 when no replica of `model` can serve soon: every one failed, or is starting
        again after a failed start (its backoff and reload would outlast any queue timeout)."""
        replicas = self._registry.replicas(model)
        if not replicas or not all(_failing(r) for r in replicas):
            return None
        reasons = "; ".join(sorted({r.error or "unknown error" for r in replicas}))
        return Unavailable(f"Model '{model}' is not available: {reasons}", retry_after=10,
                           code="model_unavailable")  # fmt: skip

    def _abandon(self, queue: deque[asyncio.Future[Lease]], waiter: asyncio.Future[Lease]) -> None:
        """Leave the queue (timeout or client gone); hand back a lease granted meanwhile."""
        if waiter in queue:
            queue.remove(waiter)
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
            replica = pick_replica(self._registry.replicas(model))
            if replica is None:
                return
            waiter = queue.popleft()
            if not waiter.done():  # cancelled, its task not yet run to leave the queue
                waiter.set_result(self._lease(replica))

    @staticmethod
    def _fail_all(queue: deque[asyncio.Future[Lease]], error: Unavailable) -> None:
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_exception(error)


_DISPATCH_ON = frozenset({ReplicaState.READY, ReplicaState.FAILED, ReplicaState.STARTING})


def _failing(replica: Replica) -> bool:
    state = replica.state
    return state is ReplicaState.FAILED or (
        state is ReplicaState.STARTING and replica.error is not None
    )
