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
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from .errors import UpstreamFailed, UpstreamTimeout, error_body
from .scheduler import Lease

__all__ = ["ClientGone", "Proxy", "Relay", "sse_events", "until_disconnect"]

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

    async def send(
        self, url: str, body: bytes, request_id: str, first_byte_timeout: float
    ) -> aiohttp.ClientResponse:
        """POST `body` to `url`; return once the replica's status and headers arrive.

        A worker sends its headers with the first token (streams) or the whole answer.
        """
        assert self._session is not None, "Proxy.start() was not awaited"
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        try:
            async with asyncio.timeout(first_byte_timeout):
                return await self._session.post(url, data=body, headers=headers)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"The model worker sent nothing within {first_byte_timeout:g} s."
            ) from exc
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

    __slots__ = ("_idle_timeout", "_lease", "_request_id", "_upstream")

    def __init__(
        self, upstream: aiohttp.ClientResponse, lease: Lease, request_id: str, idle_timeout: float
    ):
        self._upstream = upstream
        self._lease = lease
        self._request_id = request_id.encode()
        self._idle_timeout = idle_timeout

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
            async with asyncio.timeout(self._idle_timeout):
                body = await self._upstream.read()
            status = self._upstream.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            failure = UpstreamFailed(f"The model worker failed while answering: {exc!r}")
            status, body = failure.status, failure.body()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self._request_id),
        ]
        await send(_start(status, headers))
        await send(_body(body, more=False))

    async def _relay_stream(self, receive: Receive, send: Send) -> None:
        headers = [*_SSE_HEADERS, (b"x-request-id", self._request_id)]
        await send(_start(self._upstream.status, headers))
        # Closing the upstream connection (in __call__) is what stops the worker's generation.
        with contextlib.suppress(ClientGone):  # nobody is left to tell
            await until_disconnect(receive, self._relay_events(send))

    async def _relay_events(self, send: Send) -> None:
        watchdog = _IdleWatchdog(self._idle_timeout)
        last, tail = b"", b""
        try:
            async for chunk in sse_events(self._upstream.content.iter_any()):
                last = chunk
                watchdog.paused = True  # a slow client is not a silent worker
                await send(_body(chunk, more=True))
                watchdog.resume()
        except asyncio.CancelledError:
            if not watchdog.fired:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            tail = _error_event(f"The model worker sent nothing for {self._idle_timeout:g} s.",
                                "upstream_timeout")  # fmt: skip
        except (aiohttp.ClientError, OSError):
            pass
        finally:
            watchdog.close()
        if not tail and not (last.endswith(_DONE) or _last_event_is_error(last)):
            tail = _error_event("The model worker stopped in the middle of the stream.",
                                "upstream_error")  # fmt: skip
        await send(_body(tail, more=False))


class _IdleWatchdog:
    """Cancels the current task once the worker has been silent for `seconds`.

    One timer per idle period rather than a timer reset per chunk: at hundreds of streams
    the resets were a visible share of the relay's time.
    """

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._last = self._loop.time()
        self._handle = self._loop.call_later(seconds, self._check)
        self.paused = False
        self.fired = False

    def resume(self) -> None:
        self.paused = False
        self._last = self._loop.time()

    def close(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        silent = 0.0 if self.paused else self._loop.time() - self._last
        if silent < self._seconds:
            self._handle = self._loop.call_later(self._seconds - silent, self._check)
        elif self._task is not None:
            self.fired = True
            self._task.cancel()


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes, more: bool) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": body, "more_body": more}


def _last_event_is_error(events: bytes) -> bool:
    start = events.rfind(b"\n\n", 0, len(events) - 2)
    return events[start + 2 if start >= 0 else 0 :].startswith(_ERROR_PREFIX)


def _error_event(message: str, code: str) -> bytes:
    return b"data: " + error_body(message, "server_error", code) + b"\n\n"


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
