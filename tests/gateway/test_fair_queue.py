"""Weighted fair queueing, as a pure data structure: properties over random workloads."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from gateway.pool.fair_queue import FairQueue

KEYS = st.sampled_from(["a", "b", "c", "d"])
WEIGHTS = st.dictionaries(KEYS, st.integers(1, 8), min_size=1)


@given(st.lists(st.tuples(KEYS, st.booleans()), max_size=60), st.data())
def test_every_item_comes_out_once_and_each_key_in_its_own_order(
    operations: list[tuple[str, bool]], data: st.DataObject
) -> None:
    queue: FairQueue[int] = FairQueue()
    pushed: dict[str, list[int]] = {}
    popped: dict[str, list[int]] = {}
    for serial, (key, pop_now) in enumerate(operations):
        queue.push(key, data.draw(st.integers(1, 5)), serial)
        pushed.setdefault(key, []).append(serial)
        if pop_now:
            served = queue.pop()
            assert served is not None
            popped.setdefault(served[0], []).append(served[1])
    while (served := queue.pop()) is not None:
        popped.setdefault(served[0], []).append(served[1])
    assert popped == pushed and len(queue) == 0  # FIFO within a key, nothing lost or doubled


@given(WEIGHTS, st.integers(1, 100))
def test_backlogged_keys_are_served_in_proportion_to_their_weights(
    weights: dict[str, int], pops: int
) -> None:
    queue: FairQueue[str] = FairQueue()
    for key, weight in weights.items():
        for _ in range(100):
            queue.push(key, weight, key)
    served: Counter[str] = Counter()
    for _ in range(pops):
        item = queue.pop()
        assert item is not None
        served[item[0]] += 1
    for a in weights:  # any two keys' normalised service differs by at most one turn each
        for b in weights:
            gap = abs(served[a] / weights[a] - served[b] / weights[b])
            assert gap <= 1 / weights[a] + 1 / weights[b]


@given(st.lists(KEYS, min_size=1, max_size=30), st.sets(KEYS))
def test_only_eligible_keys_are_served(keys: list[str], blocked: set[str]) -> None:
    queue: FairQueue[str] = FairQueue()
    for key in keys:
        queue.push(key, 1, key)
    while (served := queue.pop(lambda key: key not in blocked)) is not None:
        assert served[0] not in blocked
    assert sorted(queue) == sorted(key for key in keys if key in blocked)


@given(st.integers(1, 50), st.integers(1, 4))
def test_an_idle_key_banks_no_credit(alone: int, weight: int) -> None:
    queue: FairQueue[str] = FairQueue()
    for _ in range(alone + 50):
        queue.push("busy", weight, "busy")
    for _ in range(alone):
        queue.pop()  # "busy" is served alone for a while
    for _ in range(50):
        queue.push("late", weight, "late")
    served = Counter(item[0] for item in (queue.pop() for _ in range(40)) if item)
    assert abs(served["busy"] - served["late"]) <= 1  # equal weights: equal turns from now on


def test_a_retry_goes_ahead_of_everything_and_positions_are_reported() -> None:
    queue: FairQueue[str] = FairQueue()
    assert [queue.push("a", 1, "a1"), queue.push("a", 1, "a2"), queue.push("b", 1, "b1")] == [
        0,
        1,
        1,
    ]
    assert queue.push("b", 1, "retry", first=True) == 0
    assert [queue.pop(), queue.pop()] == [("b", "retry"), ("a", "a1")]
    assert queue.remove("a2") and not queue.remove("a2")
    assert queue.pop() == ("b", "b1") and queue.pop() is None and len(queue) == 0


def test_a_key_alone_may_fill_the_queue_and_another_still_gets_its_share() -> None:
    queue: FairQueue[int] = FairQueue()
    for item in range(8):
        assert queue.has_room("heavy", 1, 8)
        queue.push("heavy", 1, item)
    assert not queue.has_room("heavy", 1, 8)  # full, and holding all of it
    for item in range(4):  # the light key's share among the two: half of 8
        assert queue.has_room("light", 1, 8)
        queue.push("light", 1, 100 + item)
    assert not queue.has_room("light", 1, 8) and not queue.has_room("heavy", 1, 8)
    assert queue.has_room("weighty", 3, 8)  # weight 3 of 5: a share of 4.8


@given(WEIGHTS, st.lists(KEYS, max_size=200))
def test_the_queue_never_grows_past_twice_its_limit(
    weights: dict[str, int], arrivals: list[str]
) -> None:
    queue: FairQueue[int] = FairQueue()
    for serial, key in enumerate(arrivals):
        if queue.has_room(key, weights.get(key, 1), 6):
            queue.push(key, weights.get(key, 1), serial)
        assert len(queue) <= 12
    assert not any(queue.has_room(k, 1, 0) for k in "abcd")  # max_queue 0: no queue at all
