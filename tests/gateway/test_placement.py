"""Placement: where a new replica starts, what is evicted for it, when it waits or is refused."""

from __future__ import annotations

from typing import Any

from gateway.pool.placement import Refuse, Resident, Start, Wait, plan_start, rank_devices

MIB = 1 << 20


def resident(label: str, mib: int, device: str = "cpu", **kw: Any) -> Resident:
    return Resident(label, label.split("[")[0], device, {device: mib * MIB}, **kw)


def need(mib: int) -> Any:
    return lambda device: {device: mib * MIB}


def test_a_replica_that_fits_starts_on_the_first_candidate_with_room() -> None:
    budgets = {"0": 100 * MIB, "1": 100 * MIB}
    residents = [resident("a[0]", 80, "0", last_used=1.0)]
    assert plan_start("b[0]", ["0", "1"], need(50), budgets, residents) == Start("1")


def test_the_least_recently_used_idle_replica_is_evicted_first() -> None:
    budgets = {"cpu": 200 * MIB}
    old, recent = resident("a[0]", 100, last_used=1.0), resident("b[0]", 100, last_used=5.0)
    assert plan_start("c[0]", ["cpu"], need(100), budgets, [recent, old]) == Start("cpu", (old,))


def test_as_many_are_evicted_as_it_takes_and_no_more() -> None:
    budgets = {"cpu": 300 * MIB}
    residents = [resident(f"m{i}[0]", 100, last_used=float(i)) for i in range(3)]
    decision = plan_start("big[0]", ["cpu"], need(250), budgets, residents)
    assert decision == Start("cpu", (residents[0], residents[1], residents[2]))
    decision = plan_start("mid[0]", ["cpu"], need(150), budgets, residents)
    assert decision == Start("cpu", (residents[0], residents[1]))


def test_busy_or_just_loaded_replicas_are_waited_for_not_evicted() -> None:
    budgets = {"cpu": 100 * MIB}
    for holder in (
        resident("a[0]", 100, last_used=1.0, idle=False),
        resident("a[0]", 100, last_used=1.0, settles_in=2.0),
    ):
        assert isinstance(plan_start("b[0]", ["cpu"], need(60), budgets, [holder]), Wait)


def test_min_replicas_are_never_evicted_and_the_refusal_names_them() -> None:
    budgets = {"cpu": 100 * MIB}
    pinned = resident("a[0]", 80, last_used=1.0, pinned=True)
    decision = plan_start("b[0]", ["cpu"], need(60), budgets, [pinned])
    assert isinstance(decision, Refuse)
    assert "b[0]" in decision.reason and "a[0] 80.0 MiB (min)" in decision.reason
    assert "100.0 MiB budget" in decision.reason


def test_a_replica_bigger_than_the_whole_budget_is_refused_at_once() -> None:
    decision = plan_start("huge[0]", ["cpu"], need(500), {"cpu": 100 * MIB}, [])
    assert (
        isinstance(decision, Refuse) and "needs 500.0 MiB of a 100.0 MiB budget" in decision.reason
    )


def test_eviction_frees_only_where_the_new_replica_needs_memory() -> None:
    budgets = {"0": 100 * MIB, "1": 100 * MIB}
    elsewhere = resident("a[0]", 100, "1", last_used=0.0)
    here = resident("b[0]", 100, "0", last_used=9.0)
    assert plan_start("c[0]", ["0"], need(100), budgets, [elsewhere, here]) == Start("0", (here,))


def test_a_device_without_a_budget_is_not_accounted() -> None:
    assert plan_start("a[0]", ["7"], need(10**6), {"cpu": MIB}, []) == Start("7")


def test_auto_placement_spreads_a_models_replicas_then_prefers_free_memory() -> None:
    budgets = {"0": 100 * MIB, "1": 100 * MIB, "2": 50 * MIB}
    residents = [resident("m[0]", 10, "0", last_used=0.0), resident("x[0]", 30, "1", last_used=0.0)]
    assert rank_devices(budgets, budgets, residents, "m") == ["1", "2", "0"]
    assert rank_devices(budgets, budgets, residents, "other") == ["0", "1", "2"]


def test_after_a_long_wait_replicas_in_use_are_preempted_but_never_min_or_unsettled_ones() -> None:
    budgets = {"cpu": 100 * MIB}
    busy = resident("a[0]", 100, last_used=1.0, idle=False)
    assert isinstance(plan_start("b[0]", ["cpu"], need(60), budgets, [busy]), Wait)
    assert plan_start("b[0]", ["cpu"], need(60), budgets, [busy], preempt=True) == Start(
        "cpu", (busy,)
    )
    for kept in (
        resident("a[0]", 100, last_used=1.0, idle=False, settles_in=1.0),
        resident("a[0]", 100, last_used=1.0, idle=False, pinned=True),
    ):
        assert not isinstance(plan_start("b[0]", ["cpu"], need(60), budgets, [kept], True), Start)


def test_a_replica_already_leaving_is_waited_for_not_evicted_twice() -> None:
    leaving = resident("a[0]", 100, last_used=1.0, leaving=True)
    for preempt in (False, True):
        decision = plan_start("b[0]", ["cpu"], need(60), {"cpu": 100 * MIB}, [leaving], preempt)
        assert isinstance(decision, Wait)
