"""The process around the app: uvicorn, plus what SIGTERM, SIGINT and SIGHUP mean for it.

The first SIGTERM or SIGINT drains: new requests get 503 with Retry-After while the ones
queued or in flight finish (up to server.drain_timeout), then uvicorn shuts down and the
supervisor stops the workers. What the drain could not finish ends with an error the client
can read: a 503 for a request still queued, an error event for a stream. A second signal
exits at once. Exit status is 0 either way.
SIGHUP reloads config.yaml (gateway/reloader.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn

from ..errors import Unavailable
from ..reloader import Reloader
from ..state import Gateway

__all__ = ["GatewayServer"]

log = logging.getLogger("gateway.server")

_CUT_WAIT = 5.0  # seconds for the cut streams' error events to go out (clients that read)


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway, reloader: Reloader):
        super().__init__(config)
        self._gateway = gateway
        self._reloader = reloader
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGHUP, self._spawn, self._reloader.reload)
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT) and not self._gateway.draining and self._loop:
            self._gateway.begin_drain()
            # A signal handler may interrupt the loop anywhere: hand over through its self-pipe.
            self._loop.call_soon_threadsafe(self._spawn, self._drain_then_exit)
            return
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after shutting down, which would end the process by it.
        self._captured_signals.clear()

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        task = asyncio.get_running_loop().create_task(work())
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)

    async def _drain_then_exit(self) -> None:
        grace = self._gateway.config.server.drain_timeout
        log.info("draining: refusing new requests, waiting up to %g s for in-flight ones", grace)
        if not await self._gateway.drained(grace):
            await self._cut()
        self.should_exit = True

    async def _cut(self) -> None:
        """The drain ran out of time: end what is left with an error, not a silent cut (uvicorn
        would otherwise cancel it timeout_graceful_shutdown later, mid-answer)."""
        gateway = self._gateway
        refused = gateway.scheduler.queued_total()
        error = Unavailable(
            "The gateway is shutting down; retry on another instance.",
            retry_after=5,
            code="shutting_down",
        )
        for model in gateway.config.models:
            gateway.scheduler.refuse(model.name, error)
        cut = await gateway.proxy.cut_streams(_CUT_WAIT)
        log.warning(
            "drain timeout: %d queued requests refused, %d streams ended with an error event",
            refused,
            cut,
        )
