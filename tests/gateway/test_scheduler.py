"""Scheduler: fair across keys, FIFO within one, least-loaded ready replica, 429 when full, 503
on timeout."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config.file import KeyConfig
from gateway.errors import QueueFull, QueueTimeout, Unavailable
from gateway.http.auth import ANONYMOUS
from gateway.pool.scheduler import Lease, QueuePolicy, Scheduler, pick_replica
from gateway.replicas.registry import Registry, Replica, ReplicaState

KEY = ANONYMOUS


def replica(
    index: int, state: ReplicaState = ReplicaState.READY, in_flight: int = 0, capacity: int = 1
) -> Replica:
    return Replica("m", index, "cpu", capacity=capacity, state=state, in_flight=in_flight)


def test_pick_prefers_the_least_loaded_ready_replica() -> None:
    replicas = [replica(0, in_flight=2, capacity=4), replica(1, in_flight=1, capacity=4)]
    assert pick_replica(replicas) is replicas[1]


def test_pick_weighs_load_by_capacity() -> None:
    replicas = [replica(0, in_flight=1, capacity=2), replica(1, in_flight=2, capacity=8)]
    assert pick_replica(replicas) is replicas[1]  # a quarter full against half


def test_pick_skips_busy_and_unready_replicas() -> None:
    replicas = [replica(0, in_flight=1), replica(1, ReplicaState.STARTING), replica(2)]
    assert pick_replica(replicas) is replicas[2]


def test_pick_returns_none_when_nothing_is_free() -> None:
    assert pick_replica([replica(0, in_flight=1), replica(1, ReplicaState.FAILED)]) is None


def make(replicas: int = 1, max_queue: int = 4, timeout: float = 5.0) -> tuple[Registry, Scheduler]:
    registry = Registry()
    registry.add_model("m")
    for i in range(replicas):
        r = registry.add_replica("m", i, "cpu")
        registry.mark_starting(r, pid=1, port=1)
        registry.mark_ready(r)
    return registry, Scheduler(registry, {"m": QueuePolicy(max_queue, timeout)})


async def test_requests_spread_over_free_replicas() -> None:
    _, scheduler = make(replicas=2)
    first, second = await scheduler.acquire("m", KEY), await scheduler.acquire("m", KEY)
    assert {first.replica.index, second.replica.index} == {0, 1}


async def test_a_retry_avoids_the_replica_it_failed_on_while_another_is_free() -> None:
    registry, scheduler = make(replicas=2)
    failed, other = registry.replicas("m")
    lease = await scheduler.acquire("m", KEY, first=True, avoid=failed)
    assert lease.replica is other  # though the failed one is free and first in line
    lease.release()
    assert scheduler.try_acquire("m", KEY, avoid=failed) is not None
    assert scheduler.try_acquire("m", KEY, avoid=failed) is None  # only the failed one is free


async def test_waiters_are_served_in_arrival_order() -> None:
    _, scheduler = make()
    holder = await scheduler.acquire("m", KEY)
    order: list[int] = []

    async def wait(n: int) -> None:
        lease = await scheduler.acquire("m", KEY)
        order.append(n)
        lease.release()

    tasks = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    holder.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_full_queue_is_rejected_with_retry_after() -> None:
    _, scheduler = make(max_queue=1)
    await scheduler.acquire("m", KEY)
    waiting = asyncio.create_task(scheduler.acquire("m", KEY))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as caught:
        await scheduler.acquire("m", KEY)
    assert caught.value.status == 429 and caught.value.headers()["Retry-After"] == "1"
    waiting.cancel()


async def test_waiting_past_queue_timeout_is_a_503() -> None:
    _, scheduler = make(timeout=0.05)
    await scheduler.acquire("m", KEY)
    with pytest.raises(QueueTimeout) as caught:
        await scheduler.acquire("m", KEY)
    assert caught.value.status == 503
    assert scheduler.queued("m") == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    registry, scheduler = make()
    holder = await scheduler.acquire("m", KEY)
    waiting = asyncio.create_task(scheduler.acquire("m", KEY))
    await asyncio.sleep(0)
    assert scheduler.queued("m") == 1
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert scheduler.queued("m") == 0
    holder.release()
    assert registry.replicas("m")[0].in_flight == 0


async def test_a_lease_granted_to_a_cancelled_waiter_is_handed_back() -> None:
    registry, scheduler = make()
    holder = await scheduler.acquire("m", KEY)
    waiting = asyncio.create_task(scheduler.acquire("m", KEY))
    await asyncio.sleep(0)
    holder.release()  # grants the replica to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(waiting, return_exceptions=True)
    assert registry.replicas("m")[0].in_flight == 0


async def test_a_replica_becoming_ready_serves_the_queue() -> None:
    registry = Registry()
    registry.add_model("m")
    registry.add_replica("m", 0, "cpu")
    scheduler = Scheduler(registry, {"m": QueuePolicy(4, 5.0)})
    waiting = asyncio.create_task(scheduler.acquire("m", KEY))
    await asyncio.sleep(0)
    registry.mark_ready(registry.replicas("m")[0])
    lease: Lease = await asyncio.wait_for(waiting, 1)
    assert lease.replica.index == 0


def fail_restart(registry: Registry, replica: Replica, error: str) -> None:
    """Its worker exits, and the next one fails to load (the supervisor's order of events)."""
    registry.mark_exited(replica, None, "SIGKILL, signal 9")
    registry.mark_starting(replica, pid=2, port=2)
    registry.mark_exited(replica, error, "exit code 3")


async def test_a_model_whose_replicas_all_failed_is_unavailable_at_once() -> None:
    registry, scheduler = make()
    fail_restart(registry, registry.replicas("m")[0], "bad GGUF")
    with pytest.raises(Unavailable, match="failed to start"):
        await scheduler.acquire("m", KEY)


async def test_a_model_retrying_a_failed_start_is_unavailable_at_once() -> None:
    registry, scheduler = make()
    replica = registry.replicas("m")[0]
    fail_restart(registry, replica, "bad GGUF")
    registry.mark_starting(replica, pid=1, port=1)  # the next try, after its backoff
    with pytest.raises(Unavailable, match="failed to start"):
        await asyncio.wait_for(scheduler.acquire("m", KEY), 1)


async def test_a_replica_restarting_after_a_crash_mid_request_still_queues() -> None:
    registry, scheduler = make()
    replica = registry.replicas("m")[0]
    registry.mark_exited(replica, None, "SIGKILL, signal 9")  # was serving: back soon
    waiting = asyncio.create_task(scheduler.acquire("m", KEY))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    registry.mark_ready(replica)
    assert (await asyncio.wait_for(waiting, 1)).replica is replica


async def test_queued_requests_fail_at_once_when_the_last_replica_fails_to_start() -> None:
    registry = Registry()
    registry.add_model("m")
    replica = registry.add_replica("m", 0, "cpu")  # starting, never ready yet
    scheduler = Scheduler(registry, {"m": QueuePolicy(4, 30.0)})
    waiting = asyncio.create_task(scheduler.acquire("m", KEY))
    await asyncio.sleep(0)
    registry.mark_exited(replica, "out of memory", "exit code 3")
    with pytest.raises(Unavailable, match="failed to start"):
        await asyncio.wait_for(waiting, 1)


async def test_release_is_idempotent() -> None:
    registry, scheduler = make()
    lease = await scheduler.acquire("m", KEY)
    lease.release()
    lease.release()
    assert registry.replicas("m")[0].in_flight == 0
    assert registry.replicas("m")[0].requests_served == 1


async def test_a_replica_that_could_not_be_reached_leaves_rotation() -> None:
    _, scheduler = make(replicas=2)
    lease = await scheduler.acquire("m", KEY)
    lease.release(failed="connection refused")
    assert lease.replica.state is ReplicaState.UNHEALTHY
    assert (await scheduler.acquire("m", KEY)).replica is not lease.replica


async def test_a_retry_is_served_before_the_queue() -> None:
    _, scheduler = make()
    holder = await scheduler.acquire("m", KEY)
    queued_first = asyncio.create_task(scheduler.acquire("m", KEY))
    await asyncio.sleep(0)
    retry = asyncio.create_task(scheduler.acquire("m", KEY, first=True))
    await asyncio.sleep(0)
    holder.release()
    assert (await asyncio.wait_for(retry, 1)).replica.index == 0
    assert not queued_first.done()
    queued_first.cancel()


async def test_a_saturated_model_serves_keys_by_weight_and_each_key_in_order() -> None:
    _, scheduler = make(max_queue=100)
    light, heavy = KeyConfig("light", b"l", weight=1), KeyConfig("heavy", b"h", weight=3)
    holder = await scheduler.acquire("m", KEY)
    order: list[str] = []

    async def one(key: KeyConfig, serial: int) -> None:
        lease = await scheduler.acquire("m", key)
        order.append(f"{key.name}{serial}")
        await asyncio.sleep(0)
        lease.release()

    tasks = [asyncio.create_task(one(light, i)) for i in range(8)]  # light came first
    tasks += [asyncio.create_task(one(heavy, i)) for i in range(8)]
    await asyncio.sleep(0.01)
    holder.release()
    await asyncio.gather(*tasks)
    first_eight = order[:8]
    assert sum(name.startswith("heavy") for name in first_eight) == 6  # 3:1, not FIFO
    for name in ("light", "heavy"):
        mine = [int(n.removeprefix(name)) for n in order if n.startswith(name)]
        assert mine == sorted(mine)


async def test_a_key_at_max_concurrent_waits_without_holding_others_up() -> None:
    _, scheduler = make(replicas=3, max_queue=10)
    capped = KeyConfig("capped", b"c", max_concurrent=1)
    first = await scheduler.acquire("m", capped)
    assert scheduler.running(capped) == 1 and scheduler.try_acquire("m", capped) is None
    second = asyncio.create_task(scheduler.acquire("m", capped))
    await asyncio.sleep(0.01)
    assert not second.done()  # a replica is free, but the key is at its limit
    other = await asyncio.wait_for(scheduler.acquire("m", KEY), 1)  # not held up
    first.release()
    lease = await asyncio.wait_for(second, 1)  # its own release let it start
    assert lease.key is capped and scheduler.running(capped) == 1
    lease.release()
    other.release()
    assert scheduler.running(capped) == 0
