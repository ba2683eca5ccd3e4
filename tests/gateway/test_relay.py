"""The relay over a real loopback HTTP upstream (in-process aiohttp), without the rest."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.proxy import Proxy, Relay
from gateway.registry import Registry
from gateway.scheduler import QueuePolicy, Scheduler


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def plain_400(_: web.Request) -> web.Response:
        return web.Response(status=400, text="Got more than 8190 bytes when reading")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", plain_400)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_non_json_answer_is_relayed_as_an_openai_json_error(upstream: str) -> None:
    registry = Registry()
    registry.add_model("m")
    replica = registry.add_replica("m", 0, "cpu")
    registry.mark_ready(replica)
    lease = Scheduler(registry, {"m": QueuePolicy(1, 1.0)}).try_acquire("m")
    assert lease is not None
    proxy = Proxy()
    await proxy.start()
    try:
        response = await proxy.send(upstream + "/v1/chat/completions", "", b"{}", "id-1", 5)
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        await Relay(proxy, response, lease, "id-1", 5, 5)({}, _never, send)  # type: ignore[arg-type]
    finally:
        await proxy.close()
    start, body = sent
    assert start["status"] == 502 and (b"content-type", b"application/json") in start["headers"]
    error = json.loads(body["body"])["error"]
    assert error["code"] == "upstream_error" and "400" in error["message"]
    assert replica.in_flight == 0  # read to its end: released at once


async def _never() -> dict[str, Any]:
    raise AssertionError("the relay of a plain body does not read from the client")
