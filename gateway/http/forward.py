"""One admitted request's way to a worker and back: wait for a replica (fairly, across keys),
take the key's concurrency slot, send, once more elsewhere if the replica could not be reached,
and relay the answer. A stream that has to wait is answered at once, with SSE comments saying
its place in line (OpenAI's clients skip comments), so its user sees why it is slow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from litestar.types import ASGIApp, Receive, Scope, Send

from workers.wire import Usage

from ..config.file import ModelConfig
from ..errors import GatewayError, UpstreamFailed, UpstreamTimeout
from ..limits.local import Ticket
from ..observe.marks import Marks, marks
from ..observe.metrics import Metrics
from ..pool.proxy import renamed
from ..pool.scheduler import Lease
from ..replicas.registry import Replica
from ..state import Gateway
from .relay import (
    SSE_HEADERS,
    USAGE_ASKED,
    USAGE_IN_ANSWER,
    USAGE_REPORTED,
    ClientGone,
    Relay,
    until_disconnect,
)
from .usage import ask_for_usage

__all__ = ["QUEUED_KEEPALIVE", "Forward"]

QUEUED_KEEPALIVE = 10.0  # seconds between two "still queued" comments to a waiting stream


@dataclass
class Forward:
    """What one admitted request needs on its way: where it goes, its body, its client."""

    gateway: Gateway
    ticket: Ticket
    model: ModelConfig
    path: str
    body: bytes
    scope: Scope
    receive: Receive
    prefix: Sequence[bytes] = ()  # the prompt's block hashes, for an affinity model
    stream: bool = False
    usage: int = USAGE_REPORTED  # how the replica sent to last says the tokens used (proxy.py)

    async def answer(self, stream: bool, lease: Lease | None) -> ASGIApp:
        """The Relay of the worker's answer on `lease`, or once one is got; for a stream that
        must wait, a QueuedStream."""
        self.stream = stream
        if lease is None and stream:
            # A full queue: still a 429.
            self.gateway.scheduler.check_admission(self.model.name, self.ticket.key)
            return QueuedStream(self)
        if lease is None:
            lease = await until_disconnect(self.receive, self.queue())
        return await self.serve(lease)

    async def queue(self, entered: asyncio.Event | None = None) -> Lease:
        """Wait for a replica, noting where the request entered the line and for how long."""
        noted = marks(self.scope)

        def queued(ahead: int) -> None:
            noted.queue_position = ahead + 1
            if entered is not None:
                entered.set()

        began = time.perf_counter()
        lease = await self.gateway.scheduler.acquire(
            self.model.name, self.ticket.key, queued=queued, prefix=self.prefix
        )
        noted.queue_wait = time.perf_counter() - began
        return lease

    async def serve(self, lease: Lease, started: bool = False) -> Relay:
        """Take the key's slot and send on `lease`; once more on another replica if the first
        could not be reached, or answered 5xx while another is in rotation. `started`: the
        client has its SSE headers already."""
        try:
            await self.gateway.limits.start(self.ticket)
        except BaseException:
            lease.release()
            raise
        try:
            upstream = await self._send(lease)
        except UpstreamFailed:
            # Nothing has reached the client: retry once on another replica, ahead of the queue.
            lease = await self._lease_again()
            return self._relay(await self._send(lease), lease, started)
        if upstream.status >= 500 and self.gateway.registry.others_in_rotation(lease.replica):
            return await self._retry_elsewhere(upstream, lease, started)
        return self._relay(upstream, lease, started)

    async def _lease_again(self, avoid: Replica | None = None) -> Lease:
        """A lease for a retry, ahead of the queue; not on `avoid` if another is free."""
        acquired = self.gateway.scheduler.acquire(
            self.model.name, self.ticket.key, first=True, prefix=self.prefix, avoid=avoid
        )
        return await until_disconnect(self.receive, acquired)

    async def _retry_elsewhere(
        self, upstream: aiohttp.ClientResponse, lease: Lease, started: bool
    ) -> Relay:
        """Send once more, on another replica, a request answered 5xx before anything reached
        the client (a worker sends its status with its first token). The failed replica stays
        leased until the retry has its own, so the retry does not land on it again."""
        self.gateway.outliers.answered(lease.replica, failed=True)
        try:
            retry = await self._lease_again(avoid=lease.replica)
        finally:
            self._drop(upstream, lease)
        return self._relay(await self._send(retry), retry, started)

    def _drop(self, upstream: aiohttp.ClientResponse, lease: Lease) -> None:
        """Close an answer that goes unread; hand its replica back once its worker is done."""
        read_to_end = upstream.content.at_eof()
        upstream.close()
        if read_to_end:
            lease.release()
        else:  # the worker may still be at it
            self.gateway.proxy.release_when_done(
                lease, self.ticket.request_id, self.model.first_token_timeout
            )

    async def _send(self, lease: Lease) -> aiohttp.ClientResponse:
        """Send on `lease`; return once the worker's status and headers are in."""
        replica, proxy, model = lease.replica, self.gateway.proxy, self.model
        request_id = self.ticket.request_id
        noted = marks(self.scope)
        noted.replica, noted.upstream_started = replica.index, time.perf_counter()
        url, body = replica.api + self.path.removeprefix("/v1"), self.body
        if replica.upstream_model is not None:  # the model has another name there
            body = renamed(body, replica.upstream_model)
        body = self._asking_usage(body, replica)
        sent = proxy.send(url, replica.auth, body, request_id, model.first_token_timeout)
        try:
            return await until_disconnect(self.receive, sent)
        except UpstreamFailed as exc:
            lease.release(failed=exc.message)  # out of rotation until a health check passes
            self.gateway.outliers.answered(replica, failed=True)
            raise
        except BaseException as exc:  # the client left, or no first byte in time: it may be busy
            if isinstance(exc, UpstreamTimeout):
                self.gateway.outliers.answered(replica, failed=True)
            proxy.release_when_done(lease, request_id, model.first_token_timeout)
            raise

    def _relay(self, upstream: aiohttp.ClientResponse, lease: Lease, started: bool) -> Relay:
        """The Relay releases the lease and settles the ticket once the answer is out."""
        limits, ticket, model = self.gateway.limits, self.ticket, self.model
        outliers, replica = self.gateway.outliers, lease.replica
        return Relay(
            self.gateway.proxy,
            upstream,
            lease,
            ticket.request_id,
            model.idle_timeout,
            model.first_token_timeout,
            headers=answer_headers(ticket, marks(self.scope)),
            on_end=lambda usage: limits.finish(ticket, usage),
            started=started,
            max_bytes=self.gateway.config.server.max_upstream_bytes,
            on_verdict=lambda failed: outliers.answered(replica, failed),
            usage=self.usage,
        )

    def _asking_usage(self, body: bytes, replica: Replica) -> bytes:
        """`body` as it goes to `replica`: a stream to a server that is not our worker asks for
        its usage chunk (the relay takes it out again if the client did not ask)."""
        self.usage = USAGE_REPORTED if replica.reports_usage else USAGE_IN_ANSWER
        if self.usage == USAGE_IN_ANSWER and self.stream and self.path != "/v1/responses":
            asked = ask_for_usage(body)
            if asked is not None:
                body, self.usage = asked, USAGE_ASKED
        return body

    def settle_unsent(self) -> None:
        """The request ends without an answer relayed: one that never reached a worker used
        no tokens; one that did, an unknown number (its reservation stands)."""
        reached = marks(self.scope).upstream_started is not None
        self.gateway.limits.finish(self.ticket, None if reached else Usage(0, 0))


def answer_headers(ticket: Ticket, noted: Marks) -> list[tuple[bytes, bytes]]:
    """A limited key's x-ratelimit-* headers; a queued request's wait and position."""
    headers = [(name.encode(), value.encode()) for name, value in ticket.quota.headers().items()]
    if noted.queue_position:
        headers += [
            (b"x-queue-wait-ms", str(round(noted.queue_wait * 1000)).encode()),
            (b"x-queue-position", str(noted.queue_position).encode()),
        ]
    return headers


class QueuedStream:
    """A stream that waits for a replica: 200 and its SSE headers at once, a comment with its
    place in line (`: queued position=3`) and one every QUEUED_KEEPALIVE seconds, then the
    worker's events. What goes wrong after the headers is a final `data: {"error": ...}`."""

    def __init__(self, forward: Forward):
        self._forward = forward

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        forward, noted = self._forward, marks(scope)
        headers = [
            *SSE_HEADERS,
            (b"x-request-id", forward.ticket.request_id.encode()),
            *answer_headers(forward.ticket, noted),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            relay = await forward.serve(await self._wait(send), started=True)
        except ClientGone:
            forward.settle_unsent()
            return
        except GatewayError as exc:
            forward.settle_unsent()
            await self._fail(scope, send, exc)
            return
        await relay(scope, receive, send)

    async def _wait(self, send: Send) -> Lease:
        """Queue, telling the client where it stands until a replica is free."""
        forward, entered = self._forward, asyncio.Event()
        waiting = asyncio.ensure_future(until_disconnect(forward.receive, forward.queue(entered)))
        in_line = asyncio.ensure_future(entered.wait())
        try:
            await asyncio.wait((waiting, in_line), return_when=asyncio.FIRST_COMPLETED)
            place = f" position={marks(forward.scope).queue_position}"
            while not waiting.done():
                comment = f": queued{place}{self._loading()}\n\n".encode()
                await send({"type": "http.response.body", "body": comment, "more_body": True})
                await asyncio.wait((waiting,), timeout=QUEUED_KEEPALIVE)
                place = ""
        finally:
            in_line.cancel()
            if not waiting.done():
                waiting.cancel()
        return waiting.result()

    def _loading(self) -> str:
        """ " loading" while no replica of the model serves: one is starting (or, on demand, is
        about to)."""
        gateway, model = self._forward.gateway, self._forward.model.name
        return "" if gateway.registry.load_state(model) == "loaded" else " loading"

    @staticmethod
    async def _fail(scope: Scope, send: Send, exc: GatewayError) -> None:
        noted = marks(scope)
        noted.failed_status = exc.status  # the metrics and the log count what it really was
        metrics: Metrics | None = scope["app"].state.metrics
        if metrics is not None:
            metrics.reject(noted, exc)
        event = exc.event()
        await send({"type": "http.response.body", "body": event, "more_body": False})
