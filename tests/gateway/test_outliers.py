"""Outlier ejection: failed answers in a row take a replica out of rotation for a while."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.config.file import OutlierConfig
from gateway.replicas.outliers import Outliers, ejection_seconds, may_eject
from gateway.replicas.registry import Registry, Replica, ReplicaState

S = ReplicaState
POLICY = OutlierConfig()  # Envoy's defaults: 5 in a row, 30 s x ejections up to 300 s, 50 %


def pool(size: int, policy: OutlierConfig | None = POLICY) -> tuple[Outliers, list[Replica]]:
    registry = Registry()
    registry.add_model("m")
    replicas = [registry.add_replica("m", i, "cpu") for i in range(size)]
    for replica in replicas:
        registry.mark_starting(replica, pid=1, port=1)
        registry.mark_ready(replica)
    return Outliers(registry, lambda model: policy), replicas


def fail(outliers: Outliers, replica: Replica, times: int) -> None:
    for _ in range(times):
        outliers.answered(replica, failed=True)


async def test_five_failed_answers_in_a_row_eject_a_replica_for_30_s() -> None:
    outliers, (bad, good) = pool(2)
    fail(outliers, bad, 4)
    assert bad.state is S.READY  # four are not enough
    before = time.time()
    fail(outliers, bad, 1)
    assert bad.state is S.EJECTED and not bad.free and bad.ejections == 1
    assert bad.ejected_until is not None and 29 < bad.ejected_until - before < 31
    assert bad.describe()["state"] == "ejected" and bad.describe()["ejected_until"]
    assert good.state is S.READY


async def test_an_answer_that_did_not_fail_resets_the_count() -> None:
    outliers, (bad, _) = pool(2)
    for _ in range(3):
        fail(outliers, bad, 4)
        outliers.answered(bad, failed=False)
    assert bad.state is S.READY and bad.errors_in_a_row == 0


async def test_a_lone_replica_is_never_ejected_its_requests_have_nowhere_else_to_go() -> None:
    outliers, (only,) = pool(1)
    fail(outliers, only, 50)
    assert only.state is S.READY and only.ejections == 0


async def test_at_most_half_of_a_model_s_replicas_are_ejected_at_once() -> None:
    outliers, replicas = pool(5)
    for replica in replicas:
        fail(outliers, replica, 5)
    assert [r.state for r in replicas].count(S.EJECTED) == 2  # 50 % of 5, rounded down
    assert not may_eject(replicas, 50)
    assert may_eject(replicas, 100)


async def test_a_replica_is_readmitted_when_its_time_is_up_and_ejected_longer_next_time() -> None:
    policy = OutlierConfig(consecutive_errors=2, base_ejection_time=0.1, max_ejection_time=0.15)
    outliers, (bad, _) = pool(2, policy)
    fail(outliers, bad, 2)
    assert bad.state is S.EJECTED
    fail(outliers, bad, 3)  # answers in flight when it was ejected: they do not count later
    await asyncio.sleep(0.2)
    assert bad.state is S.READY and bad.describe()["ejected_until"] is None
    fail(outliers, bad, 1)
    assert bad.state is S.READY  # its count started again
    fail(outliers, bad, 1)
    assert bad.state is S.EJECTED and bad.ejections == 2
    assert bad.ejected_until is not None and bad.ejected_until - time.time() > 0.12  # 0.15 s
    await asyncio.sleep(0.1)
    assert bad.state is S.EJECTED


def test_the_ejection_time_grows_with_each_ejection_up_to_the_maximum() -> None:
    assert [ejection_seconds(POLICY, n) for n in (1, 2, 3, 10, 11)] == [30, 60, 90, 300, 300]


@pytest.mark.parametrize("state", [S.STARTING, S.UNHEALTHY, S.DRAINING])
async def test_only_a_replica_in_rotation_is_ejected(state: S) -> None:
    outliers, (bad, _) = pool(2)
    bad.state = state  # as the registry would have moved it
    fail(outliers, bad, 10)
    assert bad.state is state and bad.ejections == 0


async def test_a_model_no_longer_configured_ejects_nothing() -> None:
    outliers, (bad, _) = pool(2, policy=None)  # a reload removed it; requests still end
    fail(outliers, bad, 10)
    assert bad.state is S.READY
