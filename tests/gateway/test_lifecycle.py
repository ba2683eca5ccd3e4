"""The replica lifecycle table, and the registry as the one owner that applies it."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.replicas.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    ReplicaState,
    StateChange,
    check_transition,
)
from gateway.replicas.registry import Registry, Replica

S = ReplicaState


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)))
def test_a_move_is_allowed_exactly_when_the_table_lists_it(old: S, new: S) -> None:
    if new in TRANSITIONS[old]:
        check_transition(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"from {old} to {new}"):
            check_transition(old, new)


def test_the_table_covers_every_state_and_stopped_is_final() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.STOPPED] == frozenset()
    assert TRANSITIONS[S.DRAINING] == {S.STOPPED}  # a retired replica never serves again
    assert all(S.STOPPED in TRANSITIONS[s] for s in S if s is not S.STOPPED)


def test_only_a_started_worker_becomes_ready() -> None:
    assert [s for s in S if S.READY in TRANSITIONS[s]] == [
        S.STARTING,
        S.BUSY,
        S.UNHEALTHY,
        S.EJECTED,
    ]
    assert S.READY not in TRANSITIONS[S.FAILED]  # a failed replica starts a new worker first


def registry_with_one(capacity: int = 1) -> tuple[Registry, Replica, list[StateChange]]:
    registry = Registry()
    changes: list[StateChange] = []
    registry.on_change(changes.append)
    registry.add_model("m")
    replica = registry.add_replica("m", 0, "cpu", capacity)
    registry.mark_starting(replica, pid=1, port=1)
    registry.mark_ready(replica)
    return registry, replica, changes


def moves(changes: list[StateChange]) -> list[tuple[str, str]]:
    return [(c.old.value, c.new.value) for c in changes]


def test_a_full_replica_is_busy_until_a_request_ends() -> None:
    registry, replica, changes = registry_with_one(capacity=2)
    registry.begin(replica)
    assert replica.state is S.READY and replica.free
    registry.begin(replica)
    assert replica.state is S.BUSY and not replica.free
    registry.end(replica)
    assert moves(changes) == [("starting", "ready"), ("ready", "busy"), ("busy", "ready")]


def test_failures_carry_their_reason_and_the_time_of_the_change() -> None:
    registry, replica, changes = registry_with_one()
    before = replica.state_since
    registry.mark_unhealthy(replica, "connection refused")
    assert changes[-1].reason == "connection refused" and replica.error == "connection refused"
    assert replica.state_since >= before == changes[0].at
    registry.mark_exited(replica, None, "SIGKILL, signal 9")  # killed: a new worker starts
    registry.mark_starting(replica, pid=2, port=2)
    registry.mark_exited(replica, "bad GGUF", "exit code 3")  # which cannot load
    assert moves(changes)[-3:] == [
        ("ready", "unhealthy"),
        ("unhealthy", "starting"),
        ("starting", "failed"),
    ]
    described = replica.describe()
    assert (described["state"], described["error"]) == ("failed", "bad GGUF")
    assert described["state_since"] == changes[-1].at


def test_an_ejected_replica_is_out_of_rotation_until_readmitted_not_by_a_health_check() -> None:
    registry, replica, changes = registry_with_one()
    registry.begin(replica)  # busy: the answer that failed it is still in flight
    registry.eject(replica, until=123.0, reason="5 failed answers in a row")
    assert replica.state is S.EJECTED and not replica.free and replica.ejections == 1
    assert changes[-1].reason == replica.error == "5 failed answers in a row"
    assert registry.model_status("m")["ready_replicas"] == 0  # not in rotation
    registry.mark_healthy(replica)  # a server answering 500 to everything passes its checks
    registry.mark_unhealthy(replica, "a status check failed")
    assert replica.state is S.EJECTED and replica.describe()["ejected_until"] == 123.0
    registry.readmit(replica)
    assert replica.state is S.BUSY and replica.error is None
    registry.end(replica)
    assert moves(changes)[-3:] == [("busy", "ejected"), ("ejected", "busy"), ("busy", "ready")]
    assert replica.describe()["ejected_until"] is None


def test_only_a_replica_in_rotation_is_ejected() -> None:
    registry, replica, _ = registry_with_one()
    registry.mark_unhealthy(replica, "connection refused")
    registry.eject(replica, until=123.0, reason="failed answers")
    registry.readmit(replica)
    assert replica.state is S.UNHEALTHY and replica.ejections == 0


def test_an_illegal_move_is_refused_and_changes_nothing() -> None:
    registry, replica, changes = registry_with_one()
    registry.mark_stopped(replica)
    with pytest.raises(IllegalTransition):
        registry.mark_draining(replica)
    assert replica.state is S.STOPPED and moves(changes)[-1] == ("ready", "stopped")


def test_a_draining_replica_stays_draining_when_its_worker_exits() -> None:
    registry, replica, changes = registry_with_one()
    registry.mark_draining(replica)
    registry.mark_exited(replica, None, "exit code 0")
    registry.mark_starting(replica, pid=2, port=2)
    assert replica.state is S.DRAINING and moves(changes)[-1] == ("ready", "draining")


async def test_until_wakes_on_the_change_it_waits_for() -> None:
    registry, replica, _ = registry_with_one()
    registry.begin(replica)
    registry.mark_draining(replica)
    waiting = asyncio.create_task(registry.until(lambda: replica.in_flight == 0, 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    registry.end(replica)
    assert await asyncio.wait_for(waiting, 1)
    assert not await registry.until(lambda: False, 0.05)  # a timeout says False
