"""The registry: every replica's state, load and health, with one writer per fact.

The supervisor writes lifecycle facts (starting, ready, failed, exited); the
scheduler writes load (begin, end). Everyone else reads snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Registry", "Replica", "ReplicaState"]


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"  # running, but a request could not reach it; out of rotation
    DRAINING = "draining"  # finishing its requests before it is stopped (reload, scale down)
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(eq=False)
class Replica:
    """One place requests for a model can go; the scheduler and proxy need only `url`."""

    model: str
    index: int
    device: str
    capacity: int = 1
    state: ReplicaState = ReplicaState.STARTING
    url: str = ""
    pid: int | None = None
    port: int | None = None
    in_flight: int = 0
    requests_served: int = 0
    restarts: int = 0
    loaded_at: float | None = None
    error: str | None = None
    last_exit: str | None = None  # how its last worker ended: "exit code 3", "SIGSEGV, signal 11"
    auth: str = field(default="", repr=False)  # the Authorization its worker requires

    @property
    def free(self) -> bool:
        return self.state is ReplicaState.READY and self.in_flight < self.capacity

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "replica": self.index,
            "pid": self.pid,
            "port": self.port,
            "url": self.url or None,
            "state": self.state.value,
            "device": self.device,
            "in_flight": self.in_flight,
            "requests_served": self.requests_served,
            "restarts": self.restarts,
            "loaded_at": self.loaded_at,
            "error": self.error,
            "last_exit": self.last_exit,
        }


Listener = Callable[[str], None]


class Registry:
    """Owns every Replica; mutations go through its methods."""

    def __init__(self) -> None:
        self._by_model: dict[str, list[Replica]] = {}
        self._listeners: list[Listener] = []

    def add_model(self, model: str) -> None:
        self._by_model.setdefault(model, [])

    def remove_model(self, model: str) -> None:
        del self._by_model[model]

    def add_replica(self, model: str, index: int, device: str, capacity: int = 1) -> Replica:
        """A new replica in slot `index` (during a rolling reload two may share a slot)."""
        replica = Replica(model, index, device, capacity)
        self._by_model[model].append(replica)
        return replica

    def remove_replica(self, replica: Replica) -> None:
        self._by_model[replica.model].remove(replica)

    def on_capacity(self, listener: Listener) -> None:
        """Call `listener(model)` whenever a replica of `model` may take more work or has exited."""
        self._listeners.append(listener)

    def models(self) -> list[str]:
        return list(self._by_model)

    def replicas(self, model: str) -> Sequence[Replica]:
        return self._by_model[model]

    def __iter__(self) -> Iterator[Replica]:
        for replicas in self._by_model.values():
            yield from replicas

    # Lifecycle: written by the supervisor only.

    def mark_starting(self, replica: Replica, pid: int, port: int, secret: str = "") -> None:
        replica.state = ReplicaState.STARTING
        replica.pid, replica.port = pid, port
        replica.url = f"http://127.0.0.1:{port}"
        replica.auth = f"Bearer {secret}"

    def mark_ready(self, replica: Replica) -> None:
        if replica.state is ReplicaState.DRAINING:
            return
        replica.state = ReplicaState.READY
        replica.loaded_at = time.time()
        replica.error = None
        self._notify(replica.model)

    def mark_exited(self, replica: Replica, error: str | None, how: str | None) -> None:
        """The worker process is gone (`how`: its exit code or signal, None if it never ran);
        it will be restarted unless it is being retired."""
        if replica.state is not ReplicaState.DRAINING:
            replica.state = ReplicaState.FAILED if error else ReplicaState.STARTING
        replica.error = error
        replica.last_exit = how or replica.last_exit
        replica.restarts += 1
        replica.pid = None
        self._notify(replica.model)  # a model left with no working replica fails its queue

    def mark_stopped(self, replica: Replica) -> None:
        replica.state = ReplicaState.STOPPED
        replica.pid = None

    def mark_unhealthy(self, replica: Replica, reason: str) -> None:
        """Take a replica that failed a request out of rotation until its status answers."""
        if replica.state is ReplicaState.READY:
            replica.state = ReplicaState.UNHEALTHY
            replica.error = reason

    def mark_draining(self, replica: Replica) -> None:
        """No new requests for this replica; those in flight finish."""
        replica.state = ReplicaState.DRAINING

    def mark_healthy(self, replica: Replica) -> None:
        """An unhealthy replica answers again: back into rotation."""
        if replica.state is ReplicaState.UNHEALTHY:
            replica.state = ReplicaState.READY
            replica.error = None
            self._notify(replica.model)

    # Load: written by the scheduler only.

    def begin(self, replica: Replica) -> None:
        replica.in_flight += 1

    def end(self, replica: Replica) -> None:
        replica.in_flight -= 1
        replica.requests_served += 1
        self._notify(replica.model)

    def busy(self) -> bool:
        """Whether any replica has a request in flight."""
        return any(replica.in_flight for replica in self)

    def model_status(self, model: str) -> dict[str, Any]:
        replicas = self._by_model[model]
        ready = sum(r.state is ReplicaState.READY for r in replicas)
        errors = sorted({r.error for r in replicas if r.error})
        return {"ready": ready > 0, "ready_replicas": ready, "replicas": len(replicas),
                "errors": errors}  # fmt: skip

    def _notify(self, model: str) -> None:
        for listener in self._listeners:
            listener(model)
