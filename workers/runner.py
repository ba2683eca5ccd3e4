"""The engine thread: every blocking model call runs on ONE daemon thread.

A llama context is not re-entrant and stream generators must be iterated on the thread that
created them, so all engine work goes through this single thread. It is a daemon thread (not
a ThreadPoolExecutor) so a process asked to exit never waits for a generation to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from workers.engines.base import CancelToken

__all__ = ["EngineThread", "Runner", "SlotStream", "ThreadStream"]

T = TypeVar("T")
# Items an engine thread may produce ahead of the writer: a client that reads nothing pauses the
# generation (and then ends it, via the gateway's idle timeout) instead of filling memory.
STREAM_AHEAD = 64
_Job = tuple[Callable[[], Any], Callable[[BaseException | None, Any], None]]


class SlotStream(Protocol[T]):
    """A generation's items, consumed on the event loop: `ThreadStream` or
    `workers.engines.loop.green.GreenStream`."""

    def __aiter__(self) -> SlotStream[T]: ...

    async def __anext__(self) -> T: ...

    async def close(self) -> None: ...


class Runner(Protocol):
    """Where a slot's engine calls run: `EngineThread` (a thread of its own) or
    `workers.engines.loop.green.GreenRunner` (on the event loop, for engines that wait there)."""

    async def call(self, fn: Callable[[], T], cancel: CancelToken | None = None) -> T: ...

    def stream(self, make: Callable[[], Iterator[T]], cancel: CancelToken) -> SlotStream[T]: ...

    def stop(self) -> None: ...


class _End:
    """Marks the end of a stream in the hand-over queue."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _deliver(fut: asyncio.Future[Any], exc: BaseException | None, result: Any) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    # RuntimeError: the loop has closed; the process is exiting and nobody is waiting.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


async def settle(fut: asyncio.Future[Any]) -> None:
    """Wait for a job to end, whatever its outcome (used after cancelling it)."""
    with contextlib.suppress(BaseException):
        await fut


class EngineThread:
    def __init__(self, name: str = "engine") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, done = job
            try:
                result = fn()
            except BaseException as exc:
                done(exc, None)
            else:
                done(None, result)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, lambda exc, result: _post(loop, _deliver, fut, exc, result)))
        return fut

    async def call(self, fn: Callable[[], T], cancel: CancelToken | None = None) -> T:
        """Run fn on the engine thread; if the caller is cancelled, stop it and wait for it."""
        fut = self.submit(fn)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Keep the caller (and its lock) until the thread is really free again.
            if cancel is not None:
                cancel.cancel()
            await settle(fut)
            raise

    def stream(self, make: Callable[[], Iterator[T]], cancel: CancelToken) -> ThreadStream[T]:
        return ThreadStream(self, make, cancel)

    def stop(self) -> None:
        self._jobs.put(None)


class ThreadStream(Generic[T]):
    """Iterate an engine generator on the engine thread, consuming its items on the loop."""

    def __init__(self, thread: EngineThread, make: Callable[[], Iterator[T]], cancel: CancelToken):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[T | _End | _Failure] = asyncio.Queue()
        self._room = threading.Semaphore(STREAM_AHEAD)
        self._cancel = cancel
        self.done = thread.submit(lambda: self._pump(make))

    def _put(self, item: T | _End | _Failure) -> None:
        _post(self._loop, self._queue.put_nowait, item)

    def _pump(self, make: Callable[[], Iterator[T]]) -> None:
        try:
            for item in make():
                self._wait_for_room()
                self._put(item)
        except BaseException as exc:
            self._put(_Failure(exc))
        else:
            self._put(_End())

    def _wait_for_room(self) -> None:
        while not self._room.acquire(timeout=0.1):
            self._cancel.raise_if_cancelled()

    def __aiter__(self) -> ThreadStream[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if isinstance(item, _End):
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            raise item.exc
        self._room.release()
        return item

    async def close(self) -> None:
        """Stop the generation (if still running) and wait until the thread is free."""
        self._cancel.cancel()
        await settle(self.done)
