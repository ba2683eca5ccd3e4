"""A bare asyncio HTTP/1.1 load generator.

Keep-alive connections, hand-written request bytes and a minimal response parser (status line,
Content-Length or chunked bodies, nothing else): a few microseconds of work per request, so one
core drives thousands of requests per second. Two ways to offer load:

- closed loop: `concurrency` connections, each sending its next request when the last answers;
- open loop: arrivals scheduled on the clock at a fixed rate (Poisson or evenly spaced), whatever
  the server does; latency is measured from the *scheduled* send time, so queueing (in the
  server or in this client) shows up in the figures instead of slowing the offered rate.

In SSE mode every response records the arrival time of each server-sent event (a blank-line
terminated block), so time to first event, every inter-event gap and the event count are known.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "Outcome",
    "RunResult",
    "Target",
    "arrival_times",
    "closed_loop",
    "open_loop",
]

now = time.perf_counter

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _IDLE = range(6)


@dataclass(frozen=True)
class Target:
    """Where to send, and the exact bytes of the one request sent over and over."""

    host: str
    port: int
    path: str
    body: bytes
    headers: tuple[str, ...] = ()

    def request_bytes(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
            *self.headers,
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + self.body


@dataclass(slots=True)
class Outcome:
    """One request: status 0 means the connection failed or the run timed it out."""

    start: float  # scheduled (open loop) or actual (closed loop) send time
    sent: float = 0.0
    end: float = 0.0
    status: int = 0
    nbytes: int = 0
    events: list[float] = field(default_factory=list)  # SSE mode: arrival time of each event

    @property
    def latency(self) -> float:
        return self.end - self.start


Done = Callable[["_Conn", Outcome], None]


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _IDLE
        self.need = 0
        self.status = 0
        self.outcome: Outcome | None = None
        self.on_done: Done | None = None
        self.closed = False
        self.keep_alive = True
        self.last = b""
        self.comments = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.outcome is not None:
            self._finish(0)

    def send(self, raw: bytes, outcome: Outcome, on_done: Done) -> None:
        assert self.transport is not None and self.state == _IDLE
        self.outcome, self.on_done, self.state = outcome, on_done, _HEAD
        self.last = b""
        self.comments = 0
        outcome.sent = now()
        self.transport.write(raw)

    def abort(self) -> None:
        """Close now; a request still in flight fails (status 0) without calling back."""
        outcome, self.outcome, self.on_done = self.outcome, None, None
        if outcome is not None:
            outcome.end, outcome.status = now(), 0
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.outcome is None:
            return  # nothing asked for it: ignore
        self.buf += data
        self._parse()

    def _parse(self) -> None:
        while self.outcome is not None:
            if self.state == _HEAD and not self._head():
                return
            if self.state == _BODY:
                if len(self.buf) < self.need:
                    return
                body = bytes(self.buf[: self.need])
                del self.buf[: self.need]
                self._on_body(body)
                self._finish(self.status)
                return
            if self.state == _CHUNK_SIZE and not self._chunk_size():
                return
            if self.state == _CHUNK_DATA and not self._chunk_data():
                return
            if self.state == _TRAILER and not self._trailer():
                return

    def _head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).lower()
        del self.buf[: end + 4]
        self.status = int(head[9:12])
        self.keep_alive = b"connection: close" not in head
        if b"transfer-encoding: chunked" in head:
            self.state = _CHUNK_SIZE
            return True
        at = head.find(b"content-length:")
        end = head.find(b"\r\n", at)
        self.need = 0 if at < 0 else int(head[at + 15 : end if end >= 0 else len(head)])
        self.state = _BODY
        return True

    def _line(self) -> bytes | None:
        """The next CRLF-terminated line, taken off the buffer (None until it is all here)."""
        end = self.buf.find(b"\r\n")
        if end < 0:
            return None
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def _chunk_size(self) -> bool:
        line = self._line()
        if line is None:
            return False
        size = int(line.split(b";", 1)[0], 16)
        self.need, self.state = size, (_CHUNK_DATA if size else _TRAILER)
        return True

    def _chunk_data(self) -> bool:
        if len(self.buf) < self.need + 2:
            return False
        body = bytes(self.buf[: self.need])
        del self.buf[: self.need + 2]
        self._on_body(body)
        self.state = _CHUNK_SIZE
        return True

    def _trailer(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if not line:
            self._finish(self.status)
        return True

    def _on_body(self, data: bytes) -> None:
        outcome = self.outcome
        assert outcome is not None
        outcome.nbytes += len(data)
        if self.sse and data:
            # Events end with a blank line (one may straddle two reads: hence the last bytes);
            # an SSE comment event (": ...", e.g. the worker's usage report to the gateway) is
            # no event for a client: the end of each one whose start was seen is not counted.
            self.comments += (self.last + data).count(b"\n\n:")
            count = (self.last[-1:] + data).count(b"\n\n")
            skipped = min(count, self.comments)
            count, self.comments = count - skipped, self.comments - skipped
            if count:
                t = now()
                outcome.events.extend([t] * count)
            self.last = (self.last + data)[-2:]

    def _finish(self, status: int) -> None:
        outcome, on_done = self.outcome, self.on_done
        assert outcome is not None and on_done is not None
        outcome.end, outcome.status = now(), status
        self.outcome, self.on_done, self.state = None, None, _IDLE
        self.buf.clear()
        if not self.keep_alive or status == 0:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        on_done(self, outcome)


async def _connect(target: Target, sse: bool) -> _Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _Conn(sse), target.host, target.port)
    return conn


@dataclass
class RunResult:
    """Every outcome of one run, plus how faithfully the client kept its schedule."""

    outcomes: list[Outcome]
    window: float  # seconds from the first scheduled send to the last answer
    offered_rate: float | None = None  # open loop only
    max_conns_used: int = 0

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    @property
    def errors(self) -> int:
        return sum(o.status != 200 for o in self.outcomes)

    def latencies(self) -> list[float]:
        return [o.latency for o in self.outcomes if o.status == 200]

    def send_lag(self) -> list[float]:
        """How late each request left the client after its scheduled time (open loop)."""
        return [o.sent - o.start for o in self.outcomes if o.sent]


class _Pool:
    """Keep-alive connections handed out one request at a time; requests wait for one in FIFO."""

    def __init__(self, target: Target, sse: bool, max_conns: int) -> None:
        self.target, self.sse, self.max_conns = target, sse, max_conns
        self.raw = target.request_bytes()
        self.idle: list[_Conn] = []
        self.pending: deque[Outcome] = deque()
        self.conns: set[_Conn] = set()
        self.opening = 0
        self.outstanding = 0
        self.outcomes: list[Outcome] = []
        self.all_done: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def warm(self, count: int) -> None:
        conns = await asyncio.gather(*(_connect(self.target, self.sse) for _ in range(count)))
        self.conns.update(conns)
        self.idle.extend(conns)

    def submit(self, outcome: Outcome) -> None:
        self.outstanding += 1
        self.outcomes.append(outcome)
        if self.idle:
            self.idle.pop().send(self.raw, outcome, self._done)
            return
        self.pending.append(outcome)
        if len(self.conns) + self.opening < self.max_conns:
            self._open()

    def _open(self) -> None:
        self.opening += 1
        task = asyncio.get_running_loop().create_task(self._opened())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _opened(self) -> None:
        try:
            conn = await _connect(self.target, self.sse)
        except OSError:
            self.opening -= 1
            if self.pending:
                self._fail(self.pending.popleft())
            return
        self.opening -= 1
        self.conns.add(conn)
        self._reuse(conn)

    def _fail(self, outcome: Outcome) -> None:
        outcome.end = now()
        self._count_done()

    def _done(self, conn: _Conn, outcome: Outcome) -> None:
        if conn.closed:
            self.conns.discard(conn)
            if self.pending and len(self.conns) + self.opening < self.max_conns:
                self._open()
        else:
            self._reuse(conn)
        self._count_done()

    def _reuse(self, conn: _Conn) -> None:
        if self.pending:
            conn.send(self.raw, self.pending.popleft(), self._done)
        else:
            self.idle.append(conn)

    def _count_done(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.all_done is not None and not self.all_done.done():
            self.all_done.set_result(None)

    async def drain(self, timeout: float) -> None:
        """Wait for every request to answer; what is still out after `timeout` fails (status 0)."""
        if self.outstanding:
            self.all_done = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.all_done), timeout)
        self.close()

    def close(self) -> None:
        self.max_conns = 0
        self.idle.clear()
        for task in self.tasks:
            task.cancel()
        for conn in list(self.conns):
            conn.abort()
        for outcome in self.pending:
            outcome.end = outcome.end or now()


def arrival_times(rate: float, duration: float, poisson: bool, seed: int = 1) -> list[float]:
    """Offsets (seconds from the start) of the arrivals of an open-loop run."""
    rng = random.Random(seed)
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate) if poisson else 1.0 / rate
        if t >= duration:
            return times
        times.append(t)


async def open_loop(
    targets: Target | Sequence[Target],
    rate: float,
    duration: float,
    *,
    poisson: bool = True,
    sse: bool = False,
    max_conns: int = 1024,
    timeout: float = 10.0,
    seed: int = 1,
) -> RunResult:
    """Offer `rate` requests/s for `duration` s on the clock, whatever the server does.

    Several targets share the arrivals round-robin (one connection pool each).
    """
    targets = _target_list(targets)
    pools = [_Pool(t, sse, max(1, max_conns // len(targets))) for t in targets]
    warm = max(2, int(rate * 0.01 / len(pools)))
    await asyncio.gather(*(pool.warm(min(pool.max_conns, warm)) for pool in pools))
    schedule = arrival_times(rate, duration, poisson, seed)
    t0 = now() + 0.01
    i, n = 0, len(schedule)
    while i < n:
        t = now()
        while i < n and t0 + schedule[i] <= t:
            pools[i % len(pools)].submit(Outcome(start=t0 + schedule[i]))
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, t0 + schedule[i] - now()))
    used = sum(len(pool.conns) for pool in pools)
    await asyncio.gather(*(pool.drain(timeout) for pool in pools))
    return _result([o for pool in pools for o in pool.outcomes], t0, rate, used)


async def closed_loop(
    targets: Target | Sequence[Target],
    concurrency: int,
    *,
    count: int | None = None,
    duration: float | None = None,
    sse: bool = False,
    timeout: float = 30.0,
) -> RunResult:
    """`concurrency` connections, each sending its next request as soon as the last answers.

    Stops after `count` requests in all, or after `duration` seconds (whichever is given).
    Connection i sends to targets[i % len(targets)].
    """
    assert count is not None or duration is not None
    targets = _target_list(targets)
    chosen = [targets[i % len(targets)] for i in range(concurrency)]
    conns = list(await asyncio.gather(*(_connect(t, sse) for t in chosen)))
    driver = _ClosedLoop(conns, chosen, count, duration)
    driver.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(driver.finished, timeout + (duration or 0.0))
    for conn in conns:
        conn.abort()
    return _result(driver.outcomes, driver.t0, None, concurrency)


class _ClosedLoop:
    """Connections that each send their next request as soon as the last answers, until
    `count` requests in all have gone out or `duration` seconds have passed."""

    def __init__(
        self, conns: list[_Conn], chosen: list[Target], count: int | None, duration: float | None
    ) -> None:
        self.conns = conns
        self.raws = {id(conn): t.request_bytes() for conn, t in zip(conns, chosen, strict=True)}
        self.outcomes: list[Outcome] = []
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.t0 = now()
        self.deadline = self.t0 + duration if duration is not None else float("inf")
        self.left = count if count is not None else 1 << 62  # requests still to send
        self.active = len(conns)  # connections still sending

    def start(self) -> None:
        for conn in self.conns[: min(len(self.conns), self.left)]:
            self._send(conn)
        self.active = min(len(self.conns), len(self.outcomes))

    def _send(self, conn: _Conn) -> None:
        outcome = Outcome(start=now())
        self.outcomes.append(outcome)
        self.left -= 1
        conn.send(self.raws[id(conn)], outcome, self._on_done)

    def _on_done(self, conn: _Conn, outcome: Outcome) -> None:
        if self.left > 0 and now() < self.deadline and not conn.closed:
            self._send(conn)
            return
        self.active -= 1
        if self.active == 0 and not self.finished.done():
            self.finished.set_result(None)


def _target_list(targets: Target | Sequence[Target]) -> list[Target]:
    return [targets] if isinstance(targets, Target) else list(targets)


def _result(outcomes: list[Outcome], t0: float, rate: float | None, conns: int) -> RunResult:
    last = max((o.end for o in outcomes), default=t0)
    return RunResult(outcomes, max(last - t0, 1e-9), rate, conns)
