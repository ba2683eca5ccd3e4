"""The relay over a real loopback HTTP upstream (in-process aiohttp), without the rest."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.http.auth import ANONYMOUS
from gateway.observe.metrics import MARKS_KEY, Marks
from gateway.pool.proxy import Proxy, Relay
from gateway.pool.scheduler import QueuePolicy, Scheduler
from gateway.replicas.registry import Registry
from workers.engine import Usage

_CHUNK = b'data: {"choices":[{"delta":{"content":"a: usage 1 2"}}]}\n\n'
# A worker's stream with its usage comment, written in these pieces.
STREAMS = {
    "/split": [_CHUNK, b": usage 7 3\n\n", b"data: [DONE]\n\n"],
    "/joined": [_CHUNK + b": usage 7 3\n\ndata: [DONE]\n\n"],
    "/first": [b": usage 7 3\n\n" + _CHUNK, b"data: [DONE]\n\n"],
}


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def plain_400(_: web.Request) -> web.Response:
        return web.Response(status=400, text="Got more than 8190 bytes when reading")

    async def json_answer(_: web.Request) -> web.Response:
        return web.json_response({"usage": {}}, headers={"X-Usage-Tokens": "11 4"})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in STREAMS[request.path]:
            await response.write(piece)
            await asyncio.sleep(0.01)  # separate reads on the gateway's side
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", plain_400)
    app.router.add_post("/json", json_answer)
    for path in STREAMS:
        app.router.add_post(path, stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def relay(url: str, noted: Marks | None = None) -> tuple[list[dict[str, Any]], int]:
    """Relay one answer of `url`; return what the client was sent and the replica's in_flight."""
    registry = Registry()
    registry.add_model("m")
    replica = registry.add_replica("m", 0, "cpu")
    registry.mark_ready(replica)
    lease = Scheduler(registry, {"m": QueuePolicy(1, 1.0)}).try_acquire("m", ANONYMOUS)
    assert lease is not None
    proxy = Proxy()
    await proxy.start()
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    try:
        response = await proxy.send(url, "", b"{}", "id-1", 5)
        scope = {MARKS_KEY: noted or Marks()}
        receive = _never if response.content_type != "text/event-stream" else _connected
        await Relay(proxy, response, lease, "id-1", 5, 5)(scope, receive, send)  # type: ignore[arg-type]
    finally:
        await proxy.close()
    return sent, replica.in_flight


async def test_a_non_json_answer_is_relayed_as_an_openai_json_error(upstream: str) -> None:
    sent, in_flight = await relay(upstream + "/v1/chat/completions")
    start, body = sent
    assert start["status"] == 502 and (b"content-type", b"application/json") in start["headers"]
    error = json.loads(body["body"])["error"]
    assert error["code"] == "upstream_error" and "400" in error["message"]
    assert in_flight == 0  # read to its end: released at once


async def test_a_whole_answer_s_usage_header_is_noted_and_not_relayed(upstream: str) -> None:
    noted = Marks()
    (start, _), _ = await relay(upstream + "/json", noted)
    assert noted.usage == Usage(11, 4)
    assert not any(name.lower() == b"x-usage-tokens" for name, _ in start["headers"])


@pytest.mark.parametrize("path", sorted(STREAMS))
async def test_a_stream_s_usage_comment_is_noted_and_taken_out(upstream: str, path: str) -> None:
    noted = Marks()
    sent, in_flight = await relay(upstream + path, noted)
    relayed = b"".join(message.get("body", b"") for message in sent)
    assert relayed == _CHUNK + b"data: [DONE]\n\n"  # exactly what the client asked for
    assert noted.usage == Usage(7, 3) and in_flight == 0


async def _connected() -> dict[str, Any]:
    """A client that stays connected until the answer ends."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


async def _never() -> dict[str, Any]:
    raise AssertionError("the relay of a plain body does not read from the client")
