"""What /status reports: lifecycle state, model facts and the last 100 requests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from workers.engines.base import EngineInfo, GenerationCancelled
from workers.logs import log

__all__ = ["RECENT_LIMIT", "RequestRecord", "WorkerStatus"]

RECENT_LIMIT = 100


@dataclass
class RequestRecord:
    id: str
    endpoint: str
    started: float
    finished: float | None = None
    outcome: str | None = None  # "ok" | "cancelled" | "error"; null while running
    slot: int | None = None  # which of the worker's slots served it


class WorkerStatus:
    """Lifecycle: loading -> warming_up -> ready, or failed from either.

    Each change is also written, one line each, to `phase_fd` when the supervisor gave one: it
    learns of readiness at once, and of the phase a worker was in when it crashed, which a
    status poll can miss.
    """

    def __init__(
        self,
        model: str,
        engine: str,
        path: str | None,
        concurrency: int = 1,
        phase_fd: int | None = None,
    ) -> None:
        self.model = model
        self.engine = engine
        self.path = path
        self.started_at = time.time()
        self.state = "loading"  # "busy" is derived from the slots
        self._phase_fd = phase_fd
        self.error: str | None = None
        self.info = EngineInfo(n_ctx=0, n_gpu_layers=0, embedding=False)
        self.load_seconds: float | None = None
        self.loaded_at: float | None = None
        self.requests_served = 0
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT_LIMIT)
        self._running: dict[str, asyncio.Event] = {}  # request id -> set when it has ended
        self.capacity = concurrency  # slots: requests served at once
        self.slots = asyncio.Semaphore(concurrency)
        self.busy = 0  # slots serving a request now

    def mark_loaded(self, info: EngineInfo, load_seconds: float) -> None:
        self.info = info
        self.load_seconds = load_seconds
        self._enter("warming_up")

    def mark_ready(self) -> None:
        self.loaded_at = time.time()
        self._enter("ready")

    def mark_failed(self, error: str) -> None:
        self.error = error
        self._enter("failed", error)

    def _enter(self, state: str, detail: str = "") -> None:
        self.state = state
        if self._phase_fd is not None:
            line = f"{state} {' '.join(detail.split())}".strip() + "\n"
            # The gateway may be gone (EPIPE): then nobody needs to know.
            with contextlib.suppress(OSError):
                os.write(self._phase_fd, line.encode())

    def current_state(self) -> str:
        return "busy" if self.state == "ready" and self.slots.locked() else self.state

    def body(self) -> dict[str, Any]:
        return {
            "state": self.current_state(),
            "model": self.model,
            "engine": self.engine,
            "path": self.path,
            "pid": os.getpid(),
            "device": os.environ.get("CUDA_VISIBLE_DEVICES") or "cpu",
            "n_gpu_layers": self.info.n_gpu_layers,
            "n_ctx": self.info.n_ctx,
            "embedding": self.info.embedding,
            "capacity": self.capacity,
            "slots_busy": self.busy,
            "requests_served": self.requests_served,
            "load_seconds": self.load_seconds,
            "loaded_at": self.loaded_at,
            "started_at": self.started_at,
            "error": self.error,
            "recent": [asdict(r) for r in self.recent],
        }

    async def wait_done(self, request_id: str, timeout: float) -> bool:
        """Whether the request has ended (or was never seen), waiting up to `timeout` for it.

        The gateway asks after its client left: until then it keeps the replica leased, so a
        worker still computing for nobody is never shown free."""
        done = self._running.get(request_id)
        if done is None:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await done.wait()
        return done.is_set()

    @asynccontextmanager
    async def generation(self, request_id: str, endpoint: str) -> AsyncIterator[RequestRecord]:
        """Hold the model for one request and record it; outcome follows how the body exits."""
        done = self._running[request_id] = asyncio.Event()
        try:
            async with self._recorded(request_id, endpoint) as record:
                yield record
        finally:
            done.set()
            if self._running.get(request_id) is done:
                del self._running[request_id]

    @asynccontextmanager
    async def _recorded(self, request_id: str, endpoint: str) -> AsyncIterator[RequestRecord]:
        async with self.slots:
            record = RequestRecord(request_id, endpoint, started=time.time())
            self.recent.append(record)
            self.busy += 1
            try:
                yield record
            except (asyncio.CancelledError, GenerationCancelled, ConnectionError):
                record.outcome = record.outcome or "cancelled"
                raise
            except BaseException:
                record.outcome = record.outcome or "error"
                raise
            else:
                record.outcome = record.outcome or "ok"
            finally:
                record.finished = time.time()
                self.busy -= 1
                self.requests_served += 1
                log(
                    f"{endpoint} id={request_id} {record.outcome} "
                    f"{record.finished - record.started:.3f}s"
                )
