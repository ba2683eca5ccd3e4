"""A replica's lifecycle: its states, the moves allowed between them, and the event of a move.

    starting ──> ready <──> busy          a worker is loading / serves / is full
       │  ▲        │  ▲      │
       │  │        ▼  │      ▼
       │  └──── unhealthy <──┘            it failed a request or a status check: out of rotation
       ▼
     failed ──> starting                  it could not start; the supervisor tries again
    ready, busy <──> ejected              it answered with errors too often in a row: out for a time
    any of the above ──> draining ──> stopped      retired (reload, scale down, shutdown)
    any of the above ──> stopped
    ready, busy, unhealthy, ejected ──> starting   its worker exited; a new one is starting

Pure: the registry (gateway/replicas/registry.py) is the one owner that applies moves, through
`check_transition`, and tells its subscribers with a `StateChange`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = ["TRANSITIONS", "IllegalTransition", "ReplicaState", "StateChange", "check_transition"]


class ReplicaState(StrEnum):
    STARTING = "starting"  # its worker is starting, loading or warming up
    READY = "ready"  # takes requests
    BUSY = "busy"  # ready, with as many requests in flight as its capacity
    UNHEALTHY = "unhealthy"  # running, but a request or status check failed: out of rotation
    DRAINING = "draining"  # finishing its requests before it is stopped (reload, scale down)
    STOPPED = "stopped"  # retired; its worker is gone for good
    FAILED = "failed"  # its worker could not start or load; retried with backoff
    # Answered with errors too often in a row (gateway/replicas/outliers.py): out of rotation
    # until its ejection time is up, whatever its health checks say (a server answering 500 to
    # every request may well pass them).
    EJECTED = "ejected"


S = ReplicaState
_RETIRE = frozenset({S.DRAINING, S.STOPPED})
TRANSITIONS: Mapping[ReplicaState, frozenset[ReplicaState]] = MappingProxyType(
    {
        S.STARTING: frozenset({S.READY, S.FAILED}) | _RETIRE,
        S.READY: frozenset({S.BUSY, S.UNHEALTHY, S.EJECTED, S.STARTING}) | _RETIRE,
        S.BUSY: frozenset({S.READY, S.UNHEALTHY, S.EJECTED, S.STARTING}) | _RETIRE,
        S.UNHEALTHY: frozenset({S.READY, S.BUSY, S.STARTING}) | _RETIRE,
        S.EJECTED: frozenset({S.READY, S.BUSY, S.STARTING}) | _RETIRE,
        S.FAILED: frozenset({S.STARTING}) | _RETIRE,
        S.DRAINING: frozenset({S.STOPPED}),
        S.STOPPED: frozenset(),
    }
)


class IllegalTransition(Exception):
    """A move the table does not allow: a bug in whoever asked for it."""


def check_transition(old: ReplicaState, new: ReplicaState) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"a replica cannot go from {old} to {new}")


@dataclass(frozen=True)
class StateChange:
    """One move of one replica, as its subscribers hear of it."""

    model: str
    index: int
    old: ReplicaState
    new: ReplicaState
    reason: str | None  # why, for moves a person would ask about (failed, unhealthy)
    at: float  # time.time() of the move
