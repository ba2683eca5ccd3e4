"""The HTTP connection's limits, enforced on the bytes as they arrive, before the parser sees them.

uvicorn's httptools protocol bounds neither a request's head nor its connections, and its
buffers grow quadratically (httptools concatenates a header value per chunk, uvicorn the URL):
one 130 MB header stalls the event loop, so every client, for seconds. EdgeProtocol adds:

- the request line is at most server.max_url_bytes (else 414), the headers at most
  server.max_header_bytes (else 431); the rest of a request (body, chunk framing, trailers,
  which httptools buffers like headers) at most twice server.max_body_bytes, else it is closed;
- the head arrives within server.header_timeout of the connection's opening, or of the first
  byte of a kept-alive connection's next request: else 408, or a plain close if nothing came;
- past min(server.max_connections, what the open-files limit leaves) open connections, or
  server.max_connections_per_client from its address, a new one gets 503 and is closed, unless
  it is a liveness or readiness probe, which the reserve of gateway/http/seats.py still serves.

The body's own timeout (server.body_timeout, between chunks) is the route's
(gateway/http/routes.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ..config.file import GatewayConfig, ServerConfig
from ..errors import (
    GatewayError,
    HeadersTooLarge,
    RequestTimeout,
    TooManyConnections,
    UrlTooLong,
)
from .request_ids import new_request_id
from .seats import PROBE_LINE_MAX, PROBE_WAIT, Seats, client_key, is_probe

__all__ = [
    "HEADERS_TOO_LARGE",
    "HEAD_COMPLETE",
    "PENDING",
    "TOO_LARGE",
    "URL_TOO_LONG",
    "Edge",
    "EdgeProtocol",
    "RequestMeter",
    "bind_protocol",
    "edge_protocol",
    "files_reserve",
    "raise_open_files_limit",
]

log = logging.getLogger("gateway.edge")

# RequestMeter.feed's verdicts: go on, the head just ended, or the status to refuse with.
PENDING = 0
HEAD_COMPLETE = 1
TOO_LARGE = 413
URL_TOO_LONG = 414
HEADERS_TOO_LARGE = 431

_HEAD_END = b"\r\n\r\n"
_LINGER = 1.0  # seconds a refused connection's input is still read (and dropped), see _linger
_WARN_EVERY = 10.0  # seconds between two warnings of refused connections or requests
_NO_LIMIT = 1 << 20  # open files when the hard limit is "unlimited" (Linux's default nr_open)


class RequestMeter:
    """Counts one request's bytes as they arrive: its request line, its headers, then the rest.

    O(bytes): per chunk one find for the request line's end (until found), one for the blank
    line that ends the head, plus a 6-byte look across the chunk boundary; after the head, an
    addition. No copy of a chunk, but of one that starts a request with blank lines. Bytes after
    the head are never taken for header bytes.
    """

    __slots__ = (
        "_carry",
        "_headers",
        "_in_line",
        "_line",
        "_rest",
        "in_head",
        "max_header_bytes",
        "max_rest_bytes",
        "max_url_bytes",
        "started",
    )

    def __init__(self, max_url_bytes: int, max_header_bytes: int, max_rest_bytes: int) -> None:
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.max_rest_bytes = max_rest_bytes
        self.restart()

    def restart(self) -> None:
        """Expect the next request's head: the parser has read this request to its end."""
        self.in_head = True
        self.started = False  # has a byte of this request arrived?
        self._in_line = True
        self._line = self._headers = self._rest = 0
        self._carry = b""  # the head's last 3 bytes so far: its end may straddle two chunks

    def feed(self, data: bytes) -> int:
        """Count one chunk; return PENDING, HEAD_COMPLETE or the status to refuse it with."""
        if not self.in_head:
            self._rest += len(data)
            return PENDING if self._rest <= self.max_rest_bytes else TOO_LARGE
        self.started = True
        skip = start = 0
        if self._in_line:
            # Blank lines before a request line are allowed (the parser skips them): not head.
            skip = len(data) - len(data.lstrip(b"\r\n")) if self._line == 0 else 0
            start = self._feed_line(data, skip)
            if start < 0:
                return URL_TOO_LONG if self._line > self.max_url_bytes else PENDING
        return self._feed_headers(data, start, skip)

    def _feed_line(self, data: bytes, skip: int) -> int:
        """Count request-line bytes; return where the headers start in `data`, or -1."""
        newline = data.find(b"\n", skip)
        self._line += (len(data) if newline < 0 else newline + 1) - skip
        if newline < 0 or self._line > self.max_url_bytes:
            self._keep_tail(data, skip)
            return -1
        self._in_line = False
        return newline + 1

    def _feed_headers(self, data: bytes, start: int, skip: int) -> int:
        end = self._head_end(data, skip)
        self._headers += (len(data) if end < 0 else end) - start
        if self._headers > self.max_header_bytes:
            return HEADERS_TOO_LARGE
        if end < 0:
            self._keep_tail(data, skip)
            return PENDING
        self.in_head = False
        self._rest = len(data) - end
        return HEAD_COMPLETE

    def _head_end(self, data: bytes, skip: int) -> int:
        """Where in `data` the head ends (just past its blank line), or -1."""
        if self._carry:
            across = (self._carry + data[:3]).find(_HEAD_END)
            if across >= 0:
                return across + 4 - len(self._carry)
        # The request line holds no "\n": the first match is the head's end, even with no headers.
        end = data.find(_HEAD_END, skip)
        return end if end < 0 else end + 4

    def _keep_tail(self, data: bytes, skip: int) -> None:
        self._carry = (self._carry + data[max(skip, len(data) - 3) :])[-3:]


@dataclass(frozen=True)
class Edge:
    """What EdgeProtocol reads: the running server settings (a reload swaps them) and the cap."""

    server: Callable[[], ServerConfig]
    fd_cap: int  # client connections the open-files limit leaves room for
    seats: Seats[EdgeProtocol] = field(default_factory=Seats)  # every connection's, shared


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; edge_protocol() binds its Edge."""

    edge: ClassVar[Edge]
    _warned_at: ClassVar[float] = -_WARN_EVERY

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._settings = settings = self.edge.server()
        # The rest of a request: its body, twice over for chunk framing, and trailers.
        rest = 2 * settings.max_body_bytes + settings.max_header_bytes
        self._meter = RequestMeter(settings.max_url_bytes, settings.max_header_bytes, rest)
        self._timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # when the head being read started its clock
        self._refused = False
        self._seat: str | None = None  # the client (seats.client_key) whose seat it holds
        self._probing = False  # in the probes' reserve: one probe's request, then closed
        self._line: bytes | None = None  # a probing connection's first bytes, until screened

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_since = self.loop.time()  # the first head's clock starts at the connection
        settings, client = self._settings, client_key(self.client[0] if self.client else "")
        cap = min(settings.max_connections, self.edge.fd_cap)
        if self.edge.seats.take(client, cap, settings.max_connections_per_client):
            self._seat = client
            self._arm(self._head_since)
        else:
            self._warn(
                "%s: past server.max_connections (%d) or max_connections_per_client "
                "(%d): new connections get 503, probes excepted",
                self._peer(),
                cap,
                settings.max_connections_per_client,
            )
            self._wait_for_probe()

    def _wait_for_probe(self) -> None:
        """Past a cap: in the probes' reserve (its oldest connection refused if it is full), with
        PROBE_WAIT to show a probe's request line."""
        self._probing, self._line = True, b""
        evicted = self.edge.seats.wait(self)
        if evicted is not None:
            evicted._busy()
        self._timer = self.loop.call_later(PROBE_WAIT, self._busy)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.edge.seats.leave(self)
        if self._seat is not None:
            self.edge.seats.give_back(self._seat)
            self._seat = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # input after a refusal: dropped, see _linger
        if self._line is not None and not self._screen(data):
            return
        meter = self._meter
        if self._head_since is None and meter.in_head:  # the first byte of a kept-alive request
            self._head_since = self.loop.time()
            if self._timer is None:
                self._arm(self._head_since)
        verdict = meter.feed(data)
        if verdict == HEAD_COMPLETE:
            # Its timer stays: it will find no head on its way, and a busy connection saves a
            # timer per request.
            self._head_since = None
            if self._probing:  # a probe's head: served, so out of the reserve and its clock
                self.edge.seats.leave(self)
                self._disarm()
        elif verdict:
            self._over_limit(verdict)
            return
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._meter.restart()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._probing:
            self.transport.close()  # a seat past the caps serves one probe, not a kept-alive client
        elif self._answered_early():
            # The rest of the request would be read for nothing, as slowly as the client likes.
            self._linger()

    def _answered_early(self) -> bool:
        """Is the request being read (self.cycle's: the latest) answered already, a refusal?"""
        reading = not self._meter.in_head and not self._refused
        return reading and self.cycle.response_complete and not self.transport.is_closing()

    def _over_limit(self, status: int) -> None:
        self._warn("%s: request over a limit (%d); closing", self._peer(), status)
        if status == TOO_LARGE or self._responding():
            # Mid-request or mid-answer, no clean answer fits: end the connection.
            self.transport.close()
        elif status == URL_TOO_LONG:
            limit = self._settings.max_url_bytes
            self._refuse(UrlTooLong(f"The request line is longer than the limit of {limit} bytes."))
        else:
            limit = self._settings.max_header_bytes
            self._refuse(
                HeadersTooLarge(f"The request headers are larger than the limit of {limit} bytes.")
            )

    def _header_timeout(self) -> None:
        self._timer, since, now = None, self._head_since, self.loop.time()
        if since is None:
            return  # no head on its way: the next one's first byte arms the timer again
        if now < since + self._settings.header_timeout:
            self._arm(since)  # a later head than the one this timer was armed for
        elif self._responding():
            # A pipelined request behind an answer still going out: its head may wait its turn.
            self._arm(now)
        elif self._meter.started:
            timeout = self._settings.header_timeout
            message = f"The request headers did not arrive within {timeout:g} s."
            self._refuse(RequestTimeout(message))
        else:
            self.transport.close()  # nothing came: nobody to answer

    def _screen(self, data: bytes) -> bool:
        """Read a probing connection's request line as it comes: False once it is refused (it
        is not a probe's)."""
        assert self._line is not None
        self._line = (self._line + data)[:PROBE_LINE_MAX]
        line = self._line.lstrip(b"\r\n")  # blank lines before a request: the parser skips them
        if b"\n" not in line and len(self._line) < PROBE_LINE_MAX:
            return True  # more of it to come
        if is_probe(line):
            self._line = None
            return True
        self._busy()
        return False

    def _busy(self) -> None:
        """Answer 503 too_many_connections and close at once, unread: lingering would hold the
        very descriptors the caps save."""
        self.edge.seats.leave(self)
        self._disarm()
        if not self._refused:
            self._refused = True
            busy = TooManyConnections("The gateway has too many open connections; retry shortly.")
            self.transport.write(self._answer(503, busy.body(), b"retry-after: 1\r\n"))
        self.transport.close()

    def _refuse(self, error: GatewayError) -> None:
        """Answer `error` and end the connection."""
        self.transport.write(self._answer(error.status, error.body()))
        self._linger()

    def _linger(self) -> None:
        """End the connection once its input has been read and dropped for _LINGER s: closing
        with unread input resets it, which can destroy the answer before the client reads it."""
        self._refused = True
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(_LINGER, self.transport.close)

    def _answer(self, status: int, body: bytes, extra: bytes = b"") -> bytes:
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"x-request-id: %s\r\n" % new_request_id().encode())
        return b"".join([*head, b"connection: close\r\n", extra, b"\r\n", body])

    def _responding(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self, since: float) -> None:
        due = since + self._settings.header_timeout
        self._timer = self.loop.call_at(due, self._header_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"

    @staticmethod
    def _warn(message: str, *args: object) -> None:
        """Log at most one warning per _WARN_EVERY s: an attack is one line, not a flood."""
        now = time.monotonic()
        if now - EdgeProtocol._warned_at >= _WARN_EVERY:
            EdgeProtocol._warned_at = now
            log.warning(message, *args)


def edge_protocol(config: GatewayConfig, server: Callable[[], ServerConfig]) -> type[EdgeProtocol]:
    """At start-up: raise the open-files limit, work out the connection cap and log both; return
    EdgeProtocol bound to them and to `server` (the running settings), for uvicorn.Config(http=)."""
    open_files = raise_open_files_limit()
    reserve = files_reserve(config)
    fd_cap = max(open_files - reserve, open_files // 2)
    log.info(
        "at most %d client connections (server.max_connections: %d; open-files limit %d "
        "less %d kept for workers and upstream)",
        min(config.server.max_connections, fd_cap),
        config.server.max_connections,
        open_files,
        reserve,
    )
    return bind_protocol(Edge(server, fd_cap))


def bind_protocol(edge: Edge) -> type[EdgeProtocol]:
    """EdgeProtocol reading `edge`: uvicorn takes a class, and builds one per connection."""

    class BoundEdgeProtocol(EdgeProtocol):
        pass

    BoundEdgeProtocol.edge = edge
    return BoundEdgeProtocol


def files_reserve(config: GatewayConfig) -> int:
    """Open files to keep from clients: per replica its phase pipe, process handle, status
    checks and upstream connections (one per request it serves, idle ones pooled); plus logs,
    the listening socket and the loop's own, the probes' reserve (gateway/http/seats.py), with
    room for a reload to add a few replicas."""
    return 64 + sum(m.replicas * (m.capacity + 8) for m in config.models)


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one and return it: the common default soft
    limit, 1024, is what a thousand idle clients use up, and then nothing (a probe, a worker's
    pipe, an upstream socket) can open a file. A limit that cannot be raised stays as it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NO_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    soft = _NO_LIMIT if soft == resource.RLIM_INFINITY else soft
    log.info(
        "open-files limit: %d (hard limit: %s)",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
    )
    return soft
