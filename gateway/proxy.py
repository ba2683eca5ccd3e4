"""The proxy: sends a request body to a replica on one pooled aiohttp client and relays the answer.

Bodies pass through as bytes; SSE streams are relayed whole event by whole event,
as the replica produces them, so a half event from a dying worker never reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import aiohttp

from .errors import UpstreamFailed, error_body
from .scheduler import Lease

__all__ = ["ClientGone", "Proxy", "Relay", "sse_events", "until_disconnect"]

from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

T = TypeVar("T")

_DONE = b"data: [DONE]\n\n"
_ERROR_PREFIX = b'data: {"error"'
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class Proxy:
    """Owns the one pooled HTTP client to every replica."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, url: str, body: bytes, request_id: str) -> aiohttp.ClientResponse:
        """POST `body` to `url`; return once the replica's status and headers arrive."""
        assert self._session is not None, "Proxy.start() was not awaited"
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        try:
            return await self._session.post(url, data=body, headers=headers)
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailed(f"The model worker could not be reached: {exc}") from exc


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Regroup a byte stream into runs of complete SSE events (each ends with a blank line)."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        cut = pending.rfind(b"\n\n")
        if cut >= 0:
            yield pending[: cut + 2]
            pending = pending[cut + 2 :]


class Relay:
    """An ASGI app sending one replica response to the client; releases its lease at the end."""

    __slots__ = ("_lease", "_request_id", "_upstream")

    def __init__(self, upstream: aiohttp.ClientResponse, lease: Lease, request_id: str):
        self._upstream = upstream
        self._lease = lease
        self._request_id = request_id.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self._upstream.content_type == "text/event-stream":
                await self._relay_stream(receive, send)
            else:
                await self._relay_body(send)
        finally:
            self._upstream.close()
            self._lease.release()

    async def _relay_body(self, send: Send) -> None:
        try:
            body = await self._upstream.read()
        except (aiohttp.ClientError, OSError) as exc:
            failure = UpstreamFailed(f"The model worker failed while answering: {exc}")
            status, body, content_type = failure.status, failure.body(), b"application/json"
        else:
            status, content_type = self._upstream.status, b"application/json"
        headers = [(b"content-type", content_type), (b"x-request-id", self._request_id)]
        await send(_start(status, headers))
        await send(_body(body, more=False))

    async def _relay_stream(self, receive: Receive, send: Send) -> None:
        headers = [*_SSE_HEADERS, (b"x-request-id", self._request_id)]
        await send(_start(self._upstream.status, headers))
        # Closing the upstream connection (in __call__) is what stops the worker's generation.
        await until_disconnect(receive, self._relay_events(send))

    async def _relay_events(self, send: Send) -> None:
        last = b""
        try:
            async for events in sse_events(self._upstream.content.iter_any()):
                last = events
                await send(_body(events, more=True))
        except (aiohttp.ClientError, OSError):
            pass
        tail = b"" if last.endswith(_DONE) or _last_event_is_error(last) else _stream_broken()
        await send(_body(tail, more=False))


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes, more: bool) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": body, "more_body": more}


def _last_event_is_error(events: bytes) -> bool:
    start = events.rfind(b"\n\n", 0, len(events) - 2)
    return events[start + 2 if start >= 0 else 0 :].startswith(_ERROR_PREFIX)


def _stream_broken() -> bytes:
    body = error_body("The model worker stopped in the middle of the stream.", "server_error",
                      "upstream_error")  # fmt: skip
    return b"data: " + body + b"\n\n"


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it and raising ClientGone if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientGone()
    return task.result()
