"""Outlier ejection, as Envoy does it: a replica whose answers fail too often in a row leaves
rotation for a while.

A failed answer is a 5xx status, a timeout, a connection that could not be made or broke, or an
answer over `server.max_upstream_bytes`; any other answer (a 4xx included: the client's fault)
resets the count. After `outlier.consecutive_errors` in a row the replica is ejected for
`base_ejection_time` times the number of its ejections (at most `max_ejection_time`), unless
that would put more than `max_ejection_percent` of its model's serving replicas out at once
(rounded down: a model's lone replica is never ejected, its requests would have nowhere else to
go). When the time is up it is back in rotation; health checks do not end an ejection early (a
server answering 500 to every request may well pass them).

The decisions (`may_eject`, `ejection_seconds`) are pure; `Outliers` applies them through the
registry, the one owner of replica state, with one timer per ejected replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from ..config.file import OutlierConfig
from .registry import Registry, Replica, ReplicaState

__all__ = ["Outliers", "ejection_seconds", "may_eject"]

S = ReplicaState
_IN_ROTATION = (S.READY, S.BUSY)
_SERVING = (S.READY, S.BUSY, S.EJECTED)  # what the share of ejected replicas is of


def may_eject(replicas: Iterable[Replica], percent: int) -> bool:
    """Whether one more of a model's `replicas` may be ejected with at most `percent` of its
    serving ones (in rotation or ejected) out at once, rounded down."""
    states = [r.state for r in replicas if r.state in _SERVING]
    return (states.count(S.EJECTED) + 1) * 100 <= len(states) * percent


def ejection_seconds(policy: OutlierConfig, ejections: int) -> float:
    """How long a replica's `ejections`-th ejection lasts."""
    return min(policy.base_ejection_time * ejections, policy.max_ejection_time)


class Outliers:
    """Counts each replica's failed answers in a row; ejects it and lets it back in."""

    def __init__(self, registry: Registry, policy: Callable[[str], OutlierConfig | None]):
        self._registry = registry
        self._policy = policy  # a model's settings, as configured now (None: no longer served)
        self._timers: dict[Replica, asyncio.TimerHandle] = {}

    def answered(self, replica: Replica, failed: bool) -> None:
        """Note how one answer of `replica` went."""
        if not failed:
            replica.errors_in_a_row = 0
            return
        replica.errors_in_a_row += 1
        policy = self._policy(replica.model)
        if policy is not None and replica.errors_in_a_row >= policy.consecutive_errors:
            self._eject(replica, policy)

    def _eject(self, replica: Replica, policy: OutlierConfig) -> None:
        siblings, percent = self._registry.replicas(replica.model), policy.max_ejection_percent
        if replica.state not in _IN_ROTATION or not may_eject(siblings, percent):
            return  # out already, or too many of its model are: counted on, checked again next
        seconds = ejection_seconds(policy, replica.ejections + 1)
        reason = f"{replica.errors_in_a_row} failed answers in a row; ejected for {seconds:g} s"
        self._registry.eject(replica, time.time() + seconds, reason)
        if (earlier := self._timers.pop(replica, None)) is not None:
            earlier.cancel()
        loop = asyncio.get_running_loop()
        self._timers[replica] = loop.call_later(seconds, self._readmit, replica)

    def _readmit(self, replica: Replica) -> None:
        del self._timers[replica]
        replica.errors_in_a_row = 0  # what failed while it was out does not count against it
        self._registry.readmit(replica)
