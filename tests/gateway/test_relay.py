"""The relay over a real loopback HTTP upstream (in-process aiohttp), without the rest."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from aiohttp import web

from gateway.errors import UpstreamTooLarge
from gateway.http.auth import ANONYMOUS
from gateway.http.relay import (
    USAGE_ASKED,
    USAGE_IN_ANSWER,
    USAGE_REPORTED,
    Relay,
    sse_events,
)
from gateway.observe.marks import MARKS_KEY, Marks
from gateway.pool.proxy import Proxy
from gateway.pool.scheduler import QueuePolicy, Scheduler
from gateway.replicas.registry import Registry
from tests.support import sse_data
from workers.wire import Usage

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

    async def server_error(_: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "boom"}}, status=500)

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
    app.router.add_post("/500", server_error)
    for path, handler in MISBEHAVING.items():
        app.router.add_post(path, handler)
    for path in STREAMS:
        app.router.add_post(path, stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def relay(
    url: str,
    noted: Marks | None = None,
    max_bytes: int = 64 << 20,
    verdicts: list[bool] | None = None,
    idle_timeout: float = 5,
    usage: int = USAGE_REPORTED,
) -> tuple[list[dict[str, Any]], int]:
    """Relay one answer of `url`; return what the client was sent and the replica's in_flight.
    `verdicts` is told whether the answer failed (for outlier ejection)."""
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
        await Relay(
            proxy,
            response,
            lease,
            "id-1",
            idle_timeout,
            5,
            max_bytes=max_bytes,
            on_verdict=None if verdicts is None else verdicts.append,
            usage=usage,
        )(scope, receive, send)  # type: ignore[arg-type]
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


async def _write_for_a_while(
    request: web.Request, response: web.StreamResponse, piece: bytes
) -> web.StreamResponse:
    """Send `piece` again and again (2 MiB at most) until the gateway hangs up."""
    await response.prepare(request)
    try:
        for _ in range((2 << 20) // len(piece)):
            await response.write(piece)
            await asyncio.sleep(0.001)
    except (ConnectionError, RuntimeError):
        pass  # the relay closed the connection: what it was meant to do
    return response


async def declared_2_gib(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 2 << 30
    return await _write_for_a_while(request, response, b" " * 65536)


async def chunked_2_mib(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    return await _write_for_a_while(request, response, b" " * 65536)


async def no_blank_line(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    return await _write_for_a_while(request, response, b"x" * 4095 + b"\n")


async def stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_CHUNK)
    await asyncio.sleep(1)  # past the relay's idle timeout
    return response


async def busy_first(request: web.Request) -> web.StreamResponse:
    """llama-server's way: its headers at once, its first event once it has read the prompt."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await asyncio.sleep(0.6)  # past the idle timeout, within the first token's
    await response.write(_CHUNK + b"data: [DONE]\n\n")
    return response


# A Responses stream of OpenAI's (and llama-server's): no [DONE] after its last event.
_COMPLETED = (
    b'event: response.completed\ndata: {"type":"response.completed","response":{'
    b'"output":[],"usage":{"input_tokens":3,"output_tokens":4}}}\n\n'
)


async def responses_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'event: response.created\ndata: {"type":"response.created"}\n\n')
    await response.write(_COMPLETED)
    return response


async def completion_usage(request: web.Request) -> web.StreamResponse:
    """llama-server's completions, asked for usage: it comes on the last chunk with a choice."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(
        b'data: {"choices":[{"text":"hi","finish_reason":"stop"}],"usage":'
        b'{"prompt_tokens":2,"completion_tokens":1}}\n\ndata: [DONE]\n\n'
    )
    return response


MISBEHAVING = {
    "/declared-2gib": declared_2_gib,
    "/chunked-2mib": chunked_2_mib,
    "/no-blank-line": no_blank_line,
    "/stall": stall,
    "/busy-first": busy_first,
    "/responses": responses_stream,
    "/completion-usage": completion_usage,
}


async def test_an_answer_declaring_more_than_max_bytes_is_a_502_before_any_is_read(
    upstream: str,
) -> None:
    verdicts: list[bool] = []
    began = time.monotonic()
    (start, body), _ = await relay(upstream + "/declared-2gib", verdicts=verdicts)
    assert time.monotonic() - began < 2  # not read for the idle timeout (5 s), nor buffered
    assert start["status"] == 502
    assert json.loads(body["body"])["error"]["code"] == "upstream_too_large"
    assert verdicts == [True]  # it counts against the replica


async def test_a_body_growing_past_max_bytes_is_a_502(upstream: str) -> None:
    (start, body), _ = await relay(upstream + "/chunked-2mib", max_bytes=1 << 20)
    assert start["status"] == 502
    assert json.loads(body["body"])["error"]["code"] == "upstream_too_large"


async def test_an_event_growing_past_max_bytes_ends_its_stream_with_an_error_event(
    upstream: str,
) -> None:
    verdicts: list[bool] = []
    sent, in_flight = await relay(upstream + "/no-blank-line", max_bytes=1 << 20, verdicts=verdicts)
    relayed = b"".join(message.get("body", b"") for message in sent)
    assert len(relayed) < 1000  # nothing of the endless event reached the client
    assert json.loads(sse_data(relayed.decode())[-1])["error"]["code"] == "upstream_too_large"
    assert verdicts == [True] and in_flight == 0


@pytest.mark.parametrize(
    ("path", "failed"),
    [
        ("/json", False),
        ("/v1/chat/completions", False),
        ("/split", False),
        ("/500", True),
        ("/stall", True),
    ],
)
async def test_the_relay_says_whether_an_answer_failed(
    upstream: str, path: str, failed: bool
) -> None:
    verdicts: list[bool] = []
    await relay(upstream + path, verdicts=verdicts, idle_timeout=0.3)
    assert verdicts == [failed]  # a 4xx (the client's fault) is no failure of the replica


async def _paced(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(0)  # as a socket's reads do: a timeout can get in
        yield piece


async def events(pieces: Iterable[bytes], max_event: int = 1 << 30) -> list[bytes]:
    return [run async for run in sse_events(_paced(pieces), max_event)]


async def test_sse_events_is_linear_in_what_a_server_sends_without_a_blank_line() -> None:
    # 16 MiB in 4 KiB pieces, each ending with half a blank line: re-reading all that is
    # pending for every piece (quadratic) takes minutes here, one pass milliseconds.
    pieces = itertools.chain(itertools.repeat(b"x" * 4095 + b"\n", 4096), [b"\n"])
    async with asyncio.timeout(10):
        (event,) = await events(pieces)
    assert len(event) == (16 << 20) + 1 and event.endswith(b"x\n\n")


async def test_sse_events_finds_a_blank_line_split_between_two_pieces() -> None:
    assert await events([b"data: 1\n\ndata: 2", b"\n", b"\n"]) == [b"data: 1\n\n", b"data: 2\n\n"]
    assert await events([b"data: 1\n", b"\n"]) == [b"data: 1\n\n"]


async def test_sse_events_refuses_an_event_past_max_event_bytes() -> None:
    with pytest.raises(UpstreamTooLarge):
        await events([b"data: " + b"x" * 100, b"x" * 100], max_event=150)
    many = b"data: 1\n\n" * 100  # complete events pass, however many come at once
    assert await events([many + b"data: 2", b"\n\n"], max_event=20) == [many, b"data: 2\n\n"]


async def test_a_server_busy_with_the_prompt_after_its_headers_has_until_the_first_token_timeout(
    upstream: str,
) -> None:
    verdicts: list[bool] = []
    sent, _ = await relay(upstream + "/busy-first", verdicts=verdicts, idle_timeout=0.3)
    relayed = b"".join(message.get("body", b"") for message in sent)
    assert relayed == _CHUNK + b"data: [DONE]\n\n" and verdicts == [False]


async def test_a_responses_stream_ends_with_its_completed_event_and_says_its_usage(
    upstream: str,
) -> None:
    noted, verdicts = Marks(), list[bool]()
    sent, in_flight = await relay(
        upstream + "/responses", noted, verdicts=verdicts, usage=USAGE_IN_ANSWER
    )
    relayed = b"".join(message.get("body", b"") for message in sent)
    assert relayed.endswith(_COMPLETED) and b"error" not in relayed  # no "stopped" event added
    assert noted.usage == Usage(3, 4) and verdicts == [False] and in_flight == 0


async def test_a_usage_the_gateway_asked_for_is_taken_off_a_chunk_with_a_choice(
    upstream: str,
) -> None:
    noted = Marks()
    sent, _ = await relay(upstream + "/completion-usage", noted, usage=USAGE_ASKED)
    relayed = b"".join(message.get("body", b"") for message in sent)
    assert noted.usage == Usage(2, 1) and b"usage" not in relayed
    assert b'"finish_reason":"stop"' in relayed and relayed.endswith(b"data: [DONE]\n\n")
