"""Limits shared in a real Redis by several real gateway processes: one combined rate, slots
that a killed gateway gives back, and Redis stopped and started under load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.config.file import KeyConfig, RedisConfig
from gateway.limits.redis_store import RedisLimits
from gateway.pool.affinity import PrefixTable, prefix_hashes
from gateway.pool.affinity_sync import AffinitySync
from tests.support import (
    CHAT,
    GatewayProcess,
    api_key,
    assert_error,
    free_port,
    standin,
    wait_until,
)

SHARED_REDIS = "redis://127.0.0.1:6379/9"  # the machine's Redis (.ci/run starts one)
ADMIN = "sk-admin-0123456789abcdef"
RATED = "sk-rated-0123456789abcdef"
CAPPED = "sk-capped-0123456789abcdef"
LEASE = 2.0


def config(url: str, on_error: str = "allow") -> dict[str, Any]:
    return {
        "redis": {"url": url, "on_error": on_error, "lease_seconds": LEASE},
        "auth": {
            "keys": [
                api_key("ops", ADMIN, admin=True),
                api_key("rated", RATED, rpm=20),
                api_key("capped", CAPPED, max_concurrent=1),
            ]
        },
        "models": [standin("m"), standin("slow", token_delay=0.2, tokens=50)],
    }


def post(gateway: GatewayProcess, key: str, model: str = "m") -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, **CHAT},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    redis.Redis.from_url(SHARED_REDIS).flushdb()
    gateways = [
        GatewayProcess(config(SHARED_REDIS), tmp_path_factory.mktemp(f"gw{i}"), api_key=ADMIN)
        for i in range(2)
    ]
    for gateway in gateways:
        gateway.start()
    try:
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


def test_two_gateways_hold_one_combined_rate(pair: list[GatewayProcess]) -> None:
    began = time.monotonic()
    answers = [post(pair[i % 2], RATED) for i in range(60)]
    elapsed = time.monotonic() - began
    served = [i % 2 for i, a in enumerate(answers) if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    # 20 a minute between them, plus what the bucket refilled (20/60 a second) meanwhile:
    # without Redis each gateway would have let 20 through.
    assert 20 <= len(served) <= 20 + elapsed / 3 + 1, (len(served), elapsed)
    assert set(served) == {0, 1}
    for answer in refused:
        assert_error(answer, 429, "rate_limit_exceeded")

    def counted() -> int:  # both gateways' requests, from Redis (each writes once a second)
        with pair[0].client() as admin:
            rows = admin.get("/admin/usage").json()["data"]
        return sum(r["requests"] for r in rows if r["key"] == "rated")

    assert wait_until(lambda: counted() == len(served), 5)


def test_a_gateway_killed_mid_request_leaves_no_slot_past_the_lease(
    pair: list[GatewayProcess], tmp_path: Path
) -> None:
    doomed = GatewayProcess(config(SHARED_REDIS), tmp_path, api_key=ADMIN).start()
    holder = threading.Thread(target=lambda: _quietly(lambda: post(doomed, CAPPED, "slow")))
    holder.start()
    try:
        assert wait_until(
            lambda: any(w["in_flight"] for w in doomed.workers() if w["model"] == "slow"), 10
        )
        assert_error(post(pair[0], CAPPED), 429, "rate_limit_exceeded")  # the slot is shared
        assert doomed.proc is not None
        os.kill(doomed.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_until(lambda: post(pair[0], CAPPED).status_code == 200, LEASE + 3, 0.2)
        assert time.monotonic() - killed <= LEASE + 1.5  # at most a lease (and a poll)
    finally:
        doomed.stop()
        holder.join()


def _quietly(call: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):  # its gateway was killed: the connection drops
        call()


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    assert wait_until(lambda: _pings(client), 10), "redis-server did not start"
    return server


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_stopped_and_started_gives_on_error_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path)
    (tmp_path / "allow").mkdir()
    (tmp_path / "deny").mkdir()
    allow = GatewayProcess(
        config(url, "allow"), tmp_path / "allow", api_key=ADMIN, log=("--log-level", "info")
    )
    deny = GatewayProcess(config(url, "deny"), tmp_path / "deny", api_key=ADMIN)
    for gateway in (allow, deny):
        gateway.start()
    try:
        assert post(allow, RATED).status_code == post(deny, RATED).status_code == 200
        server.terminate()
        server.wait(10)
        assert post(allow, RATED).status_code == 200  # limits checked in that process
        error = assert_error(post(deny, RATED), 503, "limits_unavailable")
        assert "Redis" in error["message"]
        assert post(deny, "sk-" + "x" * 20).status_code == 401  # auth needs no Redis
        server = start_redis(port, tmp_path)
        assert wait_until(lambda: post(deny, RATED).status_code == 200, 10, 0.3)
        assert post(allow, RATED).status_code == 200  # through Redis again
        logged = allow.log_path.read_text()
        assert "Redis unreachable" in logged and "Redis is back" in logged
    finally:
        for gateway in (allow, deny):
            gateway.stop()
        server.terminate()
        server.wait(10)


def test_in_an_outage_a_spent_key_stays_spent(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path)
    gateway = GatewayProcess(config(f"redis://127.0.0.1:{port}/0"), tmp_path, api_key=ADMIN)
    gateway.start()
    try:
        while post(gateway, RATED).status_code == 200:  # spend the shared rpm: 20
            pass
        server.terminate()
        server.wait(10)
        began = time.monotonic()
        served = sum(post(gateway, RATED).status_code == 200 for _ in range(30))
        # The fallback goes on from Redis's last levels: what refilled meanwhile (20 a minute),
        # not a fresh minute's 20.
        assert served <= (time.monotonic() - began) / 3 + 1
    finally:
        gateway.stop()
        if server.poll() is None:
            server.terminate()
            server.wait(10)


def test_an_ended_request_s_slot_is_free_at_once_here_and_soon_everywhere(
    pair: list[GatewayProcess],
) -> None:
    # max_concurrent 1, one request after another: each one's slot rides back with the next
    # check on the same gateway, and reaches Redis within 50 ms for the other gateway.
    assert [post(pair[0], CAPPED).status_code for _ in range(5)] == [200] * 5
    time.sleep(0.2)
    assert post(pair[1], CAPPED).status_code == 200
    with redis.Redis.from_url(SHARED_REDIS) as client:
        assert wait_until(lambda: client.zcard("llmgw:{capped}:slots") == 0, 2)


async def test_a_slot_whose_release_is_on_its_way_is_free_to_the_next_check() -> None:
    # The settle's ZREM and the next admit travel on separate connections: whichever reaches
    # Redis first, the next request must find the slot free (CI once saw a 429 here).
    limits = RedisLimits(RedisConfig(url=SHARED_REDIS, lease_seconds=LEASE))
    key = KeyConfig("settling", b"\0" * 32, max_concurrent=1)
    sent, release = asyncio.Event(), asyncio.Event()
    call = limits._call

    async def settle_held_back(command: Any, quiet: bool = False) -> Any:
        if quiet:  # the settle: its answer comes only after the next check's
            sent.set()
            await release.wait()
        return await call(command, quiet)

    limits._call = settle_held_back  # type: ignore[method-assign]
    try:
        limits.finish(await limits.admit(key, "first", "m", 0, 0, with_slot=True), None)
        settling = asyncio.get_running_loop().create_task(limits._settle())
        await sent.wait()
        second = await limits.admit(key, "second", "m", 0, 0, with_slot=True)
        assert second.slot
        release.set()
        await settling
        limits.finish(second, None)
    finally:
        release.set()
        await limits.close()
    with redis.Redis.from_url(SHARED_REDIS) as client:
        assert client.zcard("llmgw:{settling}:slots") == 0


def test_every_gateway_on_the_redis_is_listed_and_one_that_stops_leaves(
    pair: list[GatewayProcess], tmp_path: Path
) -> None:
    third = GatewayProcess(config(SHARED_REDIS), tmp_path, api_key=ADMIN).start()

    def listed(gateway: GatewayProcess) -> list[dict[str, Any]]:
        with gateway.client() as admin:
            rows: list[dict[str, Any]] = admin.get("/admin/gateways").json()["data"]
            return rows

    try:
        ports = [g.port for g in (*pair, third)]
        # (a gateway SIGKILLed by an earlier test leaves when its heartbeat expires: <= 15 s)
        assert wait_until(lambda: sorted(r["port"] for r in listed(pair[0])) == sorted(ports), 20)
        mine = listed(third)
        assert mine[0]["port"] == third.port and mine[0]["pid"] == third.proc.pid  # itself first
        assert mine[0]["models"] == ["m", "slow"] and mine[0]["replicas_ready"] == 2
        with redis.Redis.from_url(SHARED_REDIS) as client:  # one that dies leaves with its TTL
            assert 0 < client.ttl(f"llmgw:gateway:{mine[0]['id']}") <= 15
    finally:
        third.stop()
    assert sorted(r["port"] for r in listed(pair[0])) == sorted(g.port for g in pair)


async def test_what_one_gateway_sends_a_remote_replica_the_others_learn() -> None:
    redis.Redis.from_url(SHARED_REDIS).delete("llmgw:affinity:http://10.0.0.5:9000/v1")
    tables = [PrefixTable(), PrefixTable(), PrefixTable()]
    syncs = [AffinitySync(SHARED_REDIS, table) for table in tables]
    api = "http://10.0.0.5:9000/v1"

    async def until_matched(table: PrefixTable, hashes: list[bytes]) -> None:
        async with asyncio.timeout(5):
            while table.matched(api, hashes) < len(hashes):
                await asyncio.sleep(0.02)

    for sync in syncs[:2]:
        sync.start()
    try:
        conversation = prefix_hashes("a conversation so far " * 100)
        await asyncio.sleep(0.3)  # both subscribed
        syncs[0].shared(api, conversation)
        await until_matched(tables[1], conversation)  # as it happens
        assert tables[0].matched(api, conversation) == 0  # not its own echo
        syncs[2].start()  # a gateway that starts later loads what was kept in Redis
        await until_matched(tables[2], conversation)
    finally:
        for sync in syncs:
            await sync.close()
