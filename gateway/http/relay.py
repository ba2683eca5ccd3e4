"""The relay: an ASGI app that sends one replica's answer to the client, a whole body or an SSE
stream whole event by whole event, as the replica produces it (a half event from a dying worker
never reaches the client), with the tokens it used, its ending (a broken stream ends with an
error event) and the replica's lease handed back at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiohttp
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from workers.wire import USAGE_COMMENT, USAGE_HEADER, Usage, parse_usage

from ..config.file import ServerConfig
from ..errors import Unavailable, UpstreamFailed, UpstreamTimeout, UpstreamTooLarge
from ..observe.marks import Marks, marks
from ..pool.proxy import Proxy
from ..pool.scheduler import Lease
from .encoding import GZIP_AT_LEAST, GZIP_HEADERS, accepts_gzip, compressed
from .foreign_answers import completed_chat, in_openai_words
from .usage import USAGE_MARK, take_usage_chunk, usage_in_body

__all__ = [
    "SSE_HEADERS",
    "USAGE_ASKED",
    "USAGE_IN_ANSWER",
    "USAGE_REPORTED",
    "ClientGone",
    "Relay",
    "sse_events",
    "until_disconnect",
]

log = logging.getLogger("gateway.relay")

T = TypeVar("T")
log = logging.getLogger("gateway.proxy")

_DONE = b"data: [DONE]\n\n"
# Where a replica says the tokens an answer used: our worker's header or SSE comment; OpenAI's
# `usage` in the answer (a remote server, llama-server); or a usage chunk the gateway asked a
# stream for, which the client did not (taken out of the stream).
USAGE_REPORTED, USAGE_IN_ANSWER, USAGE_ASKED = 0, 1, 2
_NOTHING_USED = Usage(0, 0)
_ERROR_PREFIX = b'data: {"error"'
# A stream's last event when a drain runs out of time: the 503 new requests get meanwhile.
_CUT_EVENT = Unavailable(
    "The gateway is shutting down: this answer was cut at "
    "server.drain_timeout; retry on another instance.",
    code="shutting_down",
).event()
# How a Responses stream ends where no `[DONE]` follows (OpenAI's, llama-server's): its last event.
_RESPONSE_ENDS = tuple(
    b"event: " + end
    for end in (b"response.completed", b"response.incomplete", b"response.failed", b"error")
)
_USAGE_EVENT = b"\n\n" + USAGE_COMMENT  # JSON in a data line holds no raw newline: unambiguous
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def sse_events(chunks: AsyncIterator[bytes], max_event: int) -> AsyncIterator[bytes]:
    """Regroup a byte stream into runs of complete SSE events (each ends with a blank line);
    UpstreamTooLarge once more than `max_event` bytes wait for the end of an event.

    Linear in the bytes, whatever a server sends: each chunk is searched once (with the byte
    before it, for a blank line split between two chunks), into one growing buffer."""
    pending = bytearray()
    async for chunk in chunks:
        if not pending and chunk.endswith(b"\n\n"):
            yield chunk  # whole events, as a worker writes them: no copy
            continue
        start = max(len(pending) - 1, 0)
        pending += chunk
        cut = pending.rfind(b"\n\n", start)
        if cut >= 0:
            yield bytes(pending[: cut + 2])
            del pending[: cut + 2]
        if len(pending) > max_event:
            raise UpstreamTooLarge(f"The model worker sent an event over {max_event} bytes.")


async def _read_capped(upstream: aiohttp.ClientResponse, limit: int) -> bytes:
    """`upstream`'s whole body; UpstreamTooLarge past `limit` bytes, by its Content-Length
    before reading any, else once that much has come."""
    declared = upstream.content_length
    if declared is not None and declared > limit:
        raise UpstreamTooLarge(f"The model worker's answer is {declared} bytes, over {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in upstream.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise UpstreamTooLarge(f"The model worker's answer is over {limit} bytes.")
    return b"".join(chunks)


class Relay:
    """An ASGI app sending one replica response to the client; releases its lease at the end."""

    __slots__ = (
        "_busy_timeout",
        "_headers",
        "_idle_timeout",
        "_lease",
        "_max_bytes",
        "_on_end",
        "_on_verdict",
        "_proxy",
        "_request_id",
        "_started",
        "_upstream",
        "_usage",
    )

    def __init__(
        self,
        proxy: Proxy,
        upstream: aiohttp.ClientResponse,
        lease: Lease,
        request_id: str,
        idle_timeout: float,
        busy_timeout: float,
        headers: list[tuple[bytes, bytes]] | None = None,
        on_end: Callable[[Usage | None], None] | None = None,
        started: bool = False,
        max_bytes: int = ServerConfig.max_upstream_bytes,
        on_verdict: Callable[[bool], None] | None = None,
        usage: int = USAGE_REPORTED,
    ):
        self._proxy = proxy
        self._upstream = upstream
        self._lease = lease
        self._request_id = request_id.encode()
        self._idle_timeout = idle_timeout
        self._busy_timeout = busy_timeout  # how long a worker may go on for a gone client
        self._headers = [(b"x-request-id", self._request_id), *(headers or ())]
        self._on_end = on_end  # told the tokens the worker reported (None: none came)
        self._started = started  # the client has its SSE headers (it waited in the queue)
        self._max_bytes = max_bytes  # the most a whole body, or one event, may hold
        self._on_verdict = on_verdict  # told whether the answer failed (for outlier ejection)
        self._usage = usage  # where the tokens used are said: USAGE_REPORTED, _IN_ANSWER, _ASKED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        noted = marks(scope)
        try:
            if self._upstream.content_type == "text/event-stream":
                await self._relay_stream(receive, send, noted)
            elif self._started:
                await self._relay_error_event(send, noted)
            else:
                await self._relay_body(scope, send, noted)
        finally:
            if self._on_end is not None:
                self._on_end(self._used(noted))
            read_to_end = self._upstream.content.at_eof()
            self._upstream.close()
            if read_to_end:
                self._lease.release()
            else:  # cut short: the worker may still be at it
                self._proxy.release_when_done(
                    self._lease, self._request_id.decode(), self._busy_timeout
                )

    def _used(self, noted: Marks) -> Usage | None:
        """The tokens the request used: as the worker reported them; none for an answer that
        is an error (refused or failed before an answer: the client got nothing to pay for);
        None (unknown) for an answer cut short."""
        if noted.usage is None and self._upstream.status >= 400:
            return _NOTHING_USED
        return noted.usage

    async def _read_body(self, noted: Marks) -> tuple[int, bytes]:
        """The worker's whole answer and its status; an OpenAI error if it was not JSON."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                body = await _read_capped(self._upstream, self._max_bytes)
            noted.upstream_ended = time.perf_counter()
            noted.usage = (
                parse_usage(self._upstream.headers.get(USAGE_HEADER, ""))
                if self._usage == USAGE_REPORTED
                else usage_in_body(body)
            )
            status = self._upstream.status
        except UpstreamTooLarge as exc:  # what was read goes: the connection is closed
            return exc.status, exc.body()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "request %s: the upstream failed while answering: %r",
                self._request_id.decode(),
                exc,
            )
            failure = UpstreamFailed("The model worker failed while answering.")
            return failure.status, failure.body()
        if self._upstream.content_type != "application/json":
            # A body we label JSON is JSON: a worker's (or its HTTP library's) plain-text error
            # becomes an OpenAI error that says what came back.
            failure = UpstreamFailed(
                f"The model worker answered {status} with a {self._upstream.content_type} body."
            )
            return failure.status, failure.body()
        if self._usage != USAGE_REPORTED:  # not our worker: maybe llama-server, in its own words
            body = (in_openai_words(body) if status >= 400 else completed_chat(body)) or body
        return status, body

    async def _relay_error_event(self, send: Send, noted: Marks) -> None:
        """A stream that waited has its 200 already: the worker's error is its last event."""
        status, body = await self._read_body(noted)
        self._judge(failed=noted.upstream_ended is None)  # None: it broke, stalled or was too big
        noted.failed_status = status
        await send(_body(b"data: " + body + b"\n\n", more=False))

    async def _relay_body(self, scope: Scope, send: Send, noted: Marks) -> None:
        status, body = await self._read_body(noted)
        self._judge(failed=noted.upstream_ended is None)
        headers = [(b"content-type", b"application/json"), *self._headers]
        if len(body) >= GZIP_AT_LEAST and accepts_gzip(scope["headers"]):
            body = await compressed(body)
            headers += GZIP_HEADERS
        headers.append((b"content-length", str(len(body)).encode()))
        await send(_start(status, headers))
        await send(_body(body, more=False))

    async def _relay_stream(self, receive: Receive, send: Send, noted: Marks) -> None:
        if not self._started:
            await send(_start(self._upstream.status, [*SSE_HEADERS, *self._headers]))
        # Closing the upstream connection (in __call__) is what stops the worker's generation.
        # A client gone, or one that reads nothing: nobody is left to tell (returning without
        # finishing the response makes the server close the connection).
        with contextlib.suppress(ClientGone, _ClientStuck):
            await until_disconnect(receive, self._relay_events(send, noted))

    async def _relay_events(self, send: Send, noted: Marks) -> None:
        # Until the first event, first_token_timeout: a server that sends its headers before it
        # has read the prompt (llama-server does) is not silent, only busy.
        watchdog = _IdleWatchdog(self._idle_timeout, first=self._busy_timeout)
        task: asyncio.Task[None] = asyncio.current_task()  # type: ignore[assignment]
        self._proxy.relaying(task, now=True)  # a drain out of time cuts it (cut_streams)
        cut = False
        last, tail = b"", b""
        gaps, previous = noted.event_gaps, 0.0
        try:
            async for chunk in sse_events(self._upstream.content.iter_any(), self._max_bytes):
                arrived = time.perf_counter()
                if self._usage == USAGE_REPORTED:
                    if _USAGE_EVENT in chunk or chunk.startswith(USAGE_COMMENT):
                        chunk = _take_usage(chunk, noted)
                elif USAGE_MARK in chunk:  # a server of OpenAI's kind: its last chunk
                    chunk, noted.usage = take_usage_chunk(chunk, self._usage == USAGE_ASKED)
                if not chunk:
                    continue
                if previous:  # the time between two events: the inter-token latency
                    gaps.append(arrived - previous)
                last, previous = chunk, arrived
                watchdog.sending = True
                await send(_body(chunk, more=True))
                watchdog.sent()
        except asyncio.CancelledError:
            cut = self._proxy.was_cut(task)
            if not (watchdog.fired or cut):
                raise
            task.uncancel()
            # A client that reads nothing holds a replica: let it go.
            if watchdog.sending and not cut:
                log.warning(
                    "request %s: the client read nothing for %g s; stream ended",
                    self._request_id.decode(),
                    self._idle_timeout,
                )
                raise _ClientStuck() from None
            silent = f"The model worker sent nothing for {watchdog.allowed:g} s."
            tail = UpstreamTimeout(silent).event()
        except UpstreamTooLarge as exc:
            tail = exc.event()
        except (aiohttp.ClientError, OSError):
            pass
        finally:
            watchdog.close()
            self._proxy.relaying(task, now=False)
        noted.upstream_ended = time.perf_counter()
        if cut:  # a drain out of time, not the worker: say so
            tail = _CUT_EVENT
        if not tail and not _stream_ended(last):
            tail = UpstreamFailed("The model worker stopped in the middle of the stream.").event()
        # It stalled, broke off, or sent too big an event (a cut is no fault of the replica's).
        self._judge(failed=bool(tail) and not cut)
        await send(_body(tail, more=False))

    def _judge(self, failed: bool) -> None:
        """Tell the outlier count how the answer went: failed, or a 5xx status anyway."""
        if self._on_verdict is not None:
            self._on_verdict(failed or self._upstream.status >= 500)


class _ClientStuck(Exception):
    """The client read nothing for idle_timeout: its stream is abandoned."""


class _IdleWatchdog:
    """Cancels the current task once `seconds` pass with no event relayed: the worker sent
    nothing (`sending` False), or the client took nothing (`sending` True: a send blocked on a
    client that does not read, which would otherwise hold the replica for ever).

    One timer per idle period rather than a timer reset per chunk: at hundreds of streams
    the resets were a visible share of the relay's time. The worker may take `first` seconds
    (if longer) for its first event.
    """

    def __init__(self, seconds: float, first: float | None = None):
        self._seconds = seconds
        self._first = seconds if first is None else max(first, seconds)
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._last = self._loop.time()
        self._handle = self._loop.call_later(seconds, self._check)
        self.sending = False
        self.fired = False

    def sent(self) -> None:
        self.sending = False
        self._first = self._seconds
        self._last = self._loop.time()

    @property
    def allowed(self) -> float:
        """The silence allowed now: idle seconds, or `first` while no event has come."""
        return self._seconds if self.sending else self._first

    def close(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        silent, allowed = self._loop.time() - self._last, self.allowed
        if silent < allowed:
            self._handle = self._loop.call_later(allowed - silent, self._check)
        elif self._task is not None:
            self.fired = True
            self._task.cancel()


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes, more: bool) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": body, "more_body": more}


def _stream_ended(events: bytes) -> bool:
    """Whether `events`, a stream's last, end it: `[DONE]`, an error event, or a Responses
    stream's last event (OpenAI's have no `[DONE]`)."""
    if events.endswith(_DONE):
        return True
    start = events.rfind(b"\n\n", 0, len(events) - 2)
    last = events[start + 2 if start >= 0 else 0 :]
    return last.startswith(_ERROR_PREFIX) or last.startswith(_RESPONSE_ENDS)


def _take_usage(events: bytes, noted: Marks) -> bytes:
    """Note the worker's usage comment (workers/wire.py); return the other events."""
    start = 0 if events.startswith(USAGE_COMMENT) else events.index(_USAGE_EVENT) + 2
    end = events.index(b"\n\n", start) + 2
    noted.usage = parse_usage(events[start + len(USAGE_COMMENT) : end])
    return events[:start] + events[end:]


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
