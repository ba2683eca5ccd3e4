"""The engine's synchronous request code, run on the event loop's thread.

llama-cpp-python's chat path (templates, grammars, tool handlers) is synchronous Python that
calls `create_completion` and reads what it returns. A slot answers that call with what the
engine loop delivers, so the code has to wait for the loop: here it waits by switching back to
the event loop (a greenlet, as SQLAlchemy's asyncio bridge does), instead of blocking a thread
of its own. So a request holds no thread, and each decode step's text reaches every request in
one hand-off to the event loop (`workers.engines.loop.engine_loop`), with nothing else woken
beside the running decode.

`GreenRunner` has `EngineThread`'s interface (`call`, `stream`): the worker serves a slot with
either. Inside, `wait(future)` suspends the code until the future is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import greenlet

from workers.engines.base import CancelToken, GenerationCancelled

__all__ = ["GreenRunner", "GreenStream", "Inbox", "in_green", "wait"]

T = TypeVar("T")


class _Green(greenlet.greenlet):
    """Code run by this bridge (anything else must not call `wait`)."""


class _Waiting:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future


class _Produced:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


_DONE = object()


def in_green() -> bool:
    return isinstance(greenlet.getcurrent(), _Green)


def wait(future: asyncio.Future[T]) -> T:
    """Suspend the green code until `future` is done (the event loop runs meanwhile)."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Green) or current.parent is None:
        raise RuntimeError("wait() outside green code")
    result: T = current.parent.switch(_Waiting(future))
    return result


class Inbox(Generic[T]):
    """Items put on the event loop's thread, taken by green code that waits for them."""

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: T) -> None:
        self.items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def take(self) -> T:
        while not self.items:
            self._waiter = asyncio.get_running_loop().create_future()
            wait(self._waiter)
        return self.items.popleft()


async def _drive(glet: _Green, *args: Any) -> Any:
    """Run `glet` until it produces, returns or raises, awaiting what it waits for."""
    signal = glet.switch(*args)
    while isinstance(signal, _Waiting):
        try:
            result = await signal.future
        except asyncio.CancelledError:
            _unwind(glet)
            raise
        except BaseException as exc:  # the awaited failure, raised where the code waited
            signal = glet.throw(exc)
            continue
        signal = glet.switch(result)
    return signal


def _unwind(glet: _Green) -> None:
    """End suspended green code: GenerationCancelled raised where it waits (its `finally`
    blocks run); whatever it raises then is its own end."""
    if glet and not glet.dead:
        with contextlib.suppress(BaseException):
            glet.throw(GenerationCancelled())


class GreenStream(Generic[T]):
    """Iterate a synchronous generator's items on the event loop (EngineThread.stream's
    counterpart: an async iterator with `close`)."""

    def __init__(self, make: Callable[[], Iterator[T]], cancel: CancelToken) -> None:
        self._cancel = cancel
        self._make = make
        self._glet = _Green(run=self._body, parent=greenlet.getcurrent())

    def _body(self) -> object:
        parent = self._glet.parent
        assert parent is not None, "a green stream runs under the event loop's greenlet"
        for item in self._make():
            parent.switch(_Produced(item))
        return _DONE

    def __aiter__(self) -> GreenStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._glet.dead:
            raise StopAsyncIteration
        signal = await _drive(self._glet)
        if signal is _DONE:
            raise StopAsyncIteration
        item: T = signal.item
        return item

    async def close(self) -> None:
        """Stop the generation (if still running): its code unwinds at once."""
        self._cancel.cancel()
        _unwind(self._glet)


class GreenRunner:
    """Runs a slot's engine calls as green code on the event loop (see the module's doc)."""

    async def call(self, fn: Callable[[], T], cancel: CancelToken | None = None) -> T:
        """fn's result; if the caller is cancelled, fn's code is unwound first."""
        glet = _Green(run=fn, parent=greenlet.getcurrent())
        try:
            result: T = await _drive(glet)
        except asyncio.CancelledError:
            if cancel is not None:
                cancel.cancel()
            raise
        return result

    def stream(self, make: Callable[[], Iterator[T]], cancel: CancelToken) -> GreenStream[T]:
        return GreenStream(make, cancel)

    def stop(self) -> None:
        """Nothing runs between calls."""
