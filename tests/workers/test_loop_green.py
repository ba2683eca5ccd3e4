"""Units: synchronous code run on the event loop as green code, waiting on futures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from workers.engines.base import CancelToken, GenerationCancelled
from workers.engines.loop.green import GreenRunner, Inbox, in_green, wait


def later(value: int, seconds: float = 0.01) -> asyncio.Future[int]:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(seconds, future.set_result, value)
    return future


async def test_a_call_waits_on_futures_while_the_loop_runs_others() -> None:
    ticks: list[int] = []

    async def ticker() -> None:
        for i in range(3):
            ticks.append(i)
            await asyncio.sleep(0.005)

    def code() -> int:
        assert in_green()
        return wait(later(20, 0.03)) + wait(later(22))

    other = asyncio.create_task(ticker())
    assert await GreenRunner().call(code) == 42
    await other
    assert ticks == [0, 1, 2]  # the ticker ran while the green code waited
    assert not in_green()


async def test_a_stream_yields_what_arrives_in_an_inbox_in_order() -> None:
    inbox: Inbox[int] = Inbox()

    def items() -> Iterator[int]:
        while (item := inbox.take()) >= 0:
            yield item

    loop = asyncio.get_running_loop()
    for delay, item in enumerate([1, 2, 3, -1]):
        loop.call_later(0.005 * (delay + 1), inbox.put, item)
    stream = GreenRunner().stream(items, CancelToken())
    assert [item async for item in stream] == [1, 2, 3]


async def test_an_error_in_green_code_reaches_the_caller() -> None:
    def code() -> None:
        wait(later(1))
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await GreenRunner().call(code)


async def test_closing_a_stream_unwinds_its_code_where_it_waits() -> None:
    unwound: list[type[BaseException]] = []
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def items() -> Iterator[int]:
        yield 1
        try:
            wait(never)
        except BaseException as exc:
            unwound.append(type(exc))
            raise
        yield 2

    cancel = CancelToken()
    stream = GreenRunner().stream(items, cancel)
    assert await anext(stream) == 1
    waiting = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.01)
    waiting.cancel()  # the handler's task goes: the code is unwound where it waits
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await stream.close()
    assert unwound == [GenerationCancelled] and cancel.cancelled


async def test_wait_outside_green_code_is_refused() -> None:
    with pytest.raises(RuntimeError, match="outside green code"):
        wait(asyncio.get_running_loop().create_future())
