"""The registry: every replica's state, load and health, and the one owner of their changes.

Every state change goes through `Registry._move`, checked against the lifecycle table
(gateway/replicas/lifecycle.py) and told to subscribers (`on_change`): the scheduler's capacity
signal, the log, later metrics. The supervisor asks for lifecycle moves (starting, ready, failed,
exited), the scheduler for load (begin, end: ready <-> busy) and health after a failed request,
the reloader for draining. Everyone else reads snapshots, or waits with `until`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.file import UpstreamConfig
from .lifecycle import ReplicaState, StateChange, check_transition

__all__ = ["Registry", "Replica", "ReplicaState"]

log = logging.getLogger("gateway.registry")
S = ReplicaState
_IN_ROTATION = (S.READY, S.BUSY)


@dataclass(eq=False)
class Replica:
    """One place requests for a model can go: a local worker process or a remote server. The
    scheduler and proxy need only `api`, `auth`, `upstream_model` and `reports_ends`."""

    model: str
    index: int
    device: str
    capacity: int = 1
    state: ReplicaState = ReplicaState.STARTING  # written by Registry._move only
    kind: str = "local"  # "local": a worker process of ours; "remote": a server elsewhere
    url: str = ""  # the server's root: http://127.0.0.1:PORT
    api: str = ""  # its OpenAI base URL: the root's /v1 for a worker; as configured for a remote
    upstream_model: str | None = None  # the model's name there, where it is not ours
    reports_ends: bool = True  # it serves /requests/ID/done (our workers do)
    # It says the tokens an answer used our worker's way (a header, an SSE comment); else
    # OpenAI's (`usage` in the answer; a stream's usage chunk, asked for: gateway/http/usage.py).
    reports_usage: bool = True
    pid: int | None = None
    port: int | None = None
    in_flight: int = 0
    requests_served: int = 0
    restarts: int = 0
    loaded_at: float | None = None
    load_seconds: float | None = None  # its last worker's start to ready (load and warm-up)
    error: str | None = None  # why it last failed (load, start, requests or status checks)
    last_exit: str | None = None  # how its last worker ended: "exit code 3", "SIGSEGV, signal 11"
    errors_in_a_row: int = 0  # answers that failed (5xx, timeout, unreachable) since one did not
    ejections: int = 0  # times it was ejected for them (gateway/replicas/outliers.py)
    ejected_until: float | None = None  # time.time() its ejection ends, while it is ejected
    # Its worker's engine counters at the last status check (workers.engines.loop.engine_loop:
    # decode steps, sequences, decoded and generated tokens, decode seconds; llama-server's
    # /metrics under those names); empty for remote ones.
    engine: dict[str, float] = field(default_factory=dict)
    # The context one request gets (its slot's): as its worker reports, or llama-server's config.
    n_ctx: int | None = None
    state_since: float = field(default_factory=time.time)  # when it entered its state
    last_used: float = field(default_factory=time.monotonic)  # a request began or ended; ready
    auth: str = field(default="", repr=False)  # the Authorization its worker requires

    @property
    def shared(self) -> bool:
        """Whether every gateway reaches it at the same `api` (a remote server; a worker's
        loopback address is its own gateway's alone)."""
        return self.kind == "remote"

    @property
    def free(self) -> bool:
        return self.state is ReplicaState.READY and self.in_flight < self.capacity

    @property
    def failing(self) -> bool:
        """Its worker could not start: failed, or starting again after a failed start (so it
        holds no model in memory, and will not serve soon)."""
        return self.state is S.FAILED or (self.state is S.STARTING and self.error is not None)

    def describe_name(self) -> str:
        """ "smollm2[0]", as logs and admin answers name it."""
        return f"{self.model}[{self.index}]"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "replica": self.index,
            "pid": self.pid,
            "port": self.port,
            "kind": self.kind,
            "url": self.url or None,
            "api": self.api or None,
            "state": self.state.value,
            "state_since": self.state_since,
            "device": self.device,
            "in_flight": self.in_flight,
            "requests_served": self.requests_served,
            "restarts": self.restarts,
            "loaded_at": self.loaded_at,
            "load_seconds": self.load_seconds,
            "error": self.error,
            "last_exit": self.last_exit,
            "ejections": self.ejections,
            "ejected_until": self.ejected_until if self.state is S.EJECTED else None,
        }


Listener = Callable[[StateChange], None]


class Registry:
    """Owns every Replica; mutations go through its methods."""

    def __init__(self) -> None:
        self._by_model: dict[str, list[Replica]] = {}
        self._listeners: list[Listener] = [_log_change]
        # Set on the next change, for `until`; made only while someone waits, so a request's
        # ready <-> busy moves allocate nothing when nobody does.
        self._changed: asyncio.Event | None = None

    def add_model(self, model: str) -> None:
        self._by_model.setdefault(model, [])

    def remove_model(self, model: str) -> None:
        del self._by_model[model]

    def add_replica(self, model: str, index: int, device: str, capacity: int = 1) -> Replica:
        """A new local replica in slot `index` (during a rolling reload two may share a slot)."""
        replica = Replica(model, index, device, capacity)
        self._by_model[model].append(replica)
        return replica

    def add_remote(self, model: str, index: int, upstream: UpstreamConfig) -> Replica:
        """A new remote replica: `upstream`, known as replica `index` of `model`."""
        auth = f"Bearer {upstream.api_key}" if upstream.api_key else ""
        replica = Replica(
            model,
            index,
            "remote",
            upstream.capacity,
            kind="remote",
            url=upstream.root,
            api=upstream.url,
            auth=auth,
            upstream_model=upstream.upstream_model,
            reports_ends=False,
            reports_usage=False,
        )
        self._by_model[model].append(replica)
        return replica

    def remove_replica(self, replica: Replica) -> None:
        """Forget `replica` (already forgotten, or its model removed: nothing to do)."""
        replicas = self._by_model.get(replica.model, [])
        if replica in replicas:
            replicas.remove(replica)

    def on_change(self, listener: Listener) -> None:
        """Call `listener(change)` after every state change of any replica."""
        self._listeners.append(listener)

    def models(self) -> list[str]:
        return list(self._by_model)

    def replicas(self, model: str) -> Sequence[Replica]:
        return self._by_model[model]

    def __iter__(self) -> Iterator[Replica]:
        for replicas in self._by_model.values():
            yield from replicas

    async def until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until `condition()` holds, checked after each change; False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return condition()
        return True

    # Lifecycle: asked for by the supervisor.

    def mark_starting(self, replica: Replica, pid: int, port: int, secret: str = "") -> None:
        replica.pid, replica.port = pid, port
        replica.url = f"http://127.0.0.1:{port}"
        replica.api = replica.url + "/v1"
        replica.auth = f"Bearer {secret}"
        if replica.state is not S.DRAINING:
            self._move(replica, S.STARTING)

    def mark_ready(self, replica: Replica) -> None:
        if replica.state is S.DRAINING:
            return
        replica.loaded_at = time.time()
        if replica.state is S.STARTING:
            replica.load_seconds = replica.loaded_at - replica.state_since
        replica.error = None
        replica.last_used = time.monotonic()
        self._move(replica, S.BUSY if replica.in_flight >= replica.capacity else S.READY)

    def mark_answering(self, replica: Replica) -> None:
        """A remote replica passed a health check: ready if it was starting, else healthy."""
        if replica.state is S.STARTING:
            self.mark_ready(replica)
        else:
            self.mark_healthy(replica)

    def note_unreachable(self, replica: Replica, reason: str) -> None:
        """A remote replica failed a health check (`reason`), too few in a row to eject it, or
        while it is starting: shown, no move."""
        replica.error = reason

    def mark_exited(self, replica: Replica, error: str | None, how: str | None) -> None:
        """The worker process is gone (`how`: its exit code or signal, None if it never ran);
        it will be restarted unless it is being retired."""
        replica.error = error
        replica.last_exit = how or replica.last_exit
        replica.restarts += 1
        replica.pid = None
        if replica.state is not S.DRAINING:
            self._move(replica, S.FAILED if error else S.STARTING, error)

    def mark_stopped(self, replica: Replica) -> None:
        replica.pid = None
        self._move(replica, S.STOPPED)

    def mark_unhealthy(self, replica: Replica, reason: str) -> None:
        """Take a replica that failed a request out of rotation until its status answers."""
        if replica.state in _IN_ROTATION:
            replica.error = reason
            self._move(replica, S.UNHEALTHY, reason)

    def mark_healthy(self, replica: Replica) -> None:
        """An unhealthy replica answers again: back into rotation."""
        if replica.state is S.UNHEALTHY:
            replica.error = None
            self._move(replica, S.BUSY if replica.in_flight >= replica.capacity else S.READY)

    # Outliers: asked for by gateway/replicas/outliers.py.

    def eject(self, replica: Replica, until: float, reason: str) -> None:
        """Take a replica in rotation out until `until` (time.time()), for `reason`."""
        if replica.state in _IN_ROTATION:
            replica.error, replica.ejected_until = reason, until
            replica.ejections += 1
            self._move(replica, S.EJECTED, reason)

    def readmit(self, replica: Replica) -> None:
        """An ejected replica's time is up: back into rotation."""
        if replica.state is S.EJECTED:
            replica.error = None
            self._move(replica, S.BUSY if replica.in_flight >= replica.capacity else S.READY)

    def others_in_rotation(self, replica: Replica) -> bool:
        """Whether another replica of its model takes requests (one to retry on)."""
        return any(
            r is not replica and r.state in _IN_ROTATION
            for r in self._by_model.get(replica.model, ())
        )

    # Retirement: asked for by the reloader.

    def mark_draining(self, replica: Replica) -> None:
        """No new requests for this replica; those in flight finish."""
        self._move(replica, S.DRAINING)

    # Load: asked for by the scheduler.

    def begin(self, replica: Replica) -> None:
        replica.in_flight += 1
        replica.last_used = time.monotonic()
        if replica.state is S.READY and replica.in_flight >= replica.capacity:
            self._move(replica, S.BUSY)

    def end(self, replica: Replica) -> None:
        replica.in_flight -= 1
        replica.requests_served += 1
        replica.last_used = time.monotonic()
        if replica.state is S.BUSY and replica.in_flight < replica.capacity:
            self._move(replica, S.READY)
        elif replica.state is S.DRAINING and not replica.in_flight:
            self._pulse()  # a drain is waited for with `until`

    def busy(self) -> bool:
        """Whether any replica has a request in flight."""
        return any(replica.in_flight for replica in self)

    def context(self, model: str) -> int | None:
        """The most tokens a request to `model` may hold, prompt and answer (its replicas'
        largest reported context); None while none has reported one (remote servers never do)."""
        return max((r.n_ctx for r in self._by_model.get(model, ()) if r.n_ctx), default=None)

    def model_status(self, model: str, on_demand: bool = False) -> dict[str, Any]:
        """Whether `model` serves now; one loaded on demand (no replica always running) is
        ready while it has no replica at all."""
        replicas = self._by_model[model]
        ready = sum(r.state in _IN_ROTATION for r in replicas)
        errors = sorted({r.error for r in replicas if r.error})
        return {
            "ready": ready > 0 or (on_demand and not replicas),
            "ready_replicas": ready,
            "replicas": len(replicas),
            "errors": errors,
            "state": self.load_state(model),
        }

    def load_state(self, model: str) -> str:
        """ "loaded" (a replica serves), "loading" (one is starting) or "unloaded" (none)."""
        states = {r.state for r in self._by_model[model]}
        if states & set(_IN_ROTATION):
            return "loaded"
        return "loading" if S.STARTING in states else "unloaded"

    def _move(self, replica: Replica, new: ReplicaState, reason: str | None = None) -> None:
        """The one place a replica's state changes: checked, stamped, told."""
        old = replica.state
        if new is old:
            return
        check_transition(old, new)
        replica.state, replica.state_since = new, time.time()
        change = StateChange(replica.model, replica.index, old, new, reason, replica.state_since)
        for listener in self._listeners:
            listener(change)
        self._pulse()

    def _pulse(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def _log_change(change: StateChange) -> None:
    # busy <-> ready is every request's rhythm: debug; the rest is what ops look for.
    level = logging.DEBUG if {change.old, change.new} <= {S.READY, S.BUSY} else logging.INFO
    if not log.isEnabledFor(level):
        return
    reason = f" ({change.reason})" if change.reason else ""
    log.log(level, "%s[%d]: %s -> %s%s", change.model, change.index, change.old, change.new, reason)
