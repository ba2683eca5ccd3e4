"""A plain client for the real-model scenarios (4, 5), where a request takes ~0.1-2 s.

aiohttp suffices here: client overhead is microseconds against model time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiohttp

from .procs import WORKER_SECRET

__all__ = [
    "Answer",
    "Arrivals",
    "Streamed",
    "ask",
    "closed_clients",
    "closed_streams",
    "prompt",
    "session",
    "steady_streams",
    "story",
]

_TOPICS = [
    "the sea",
    "a mountain",
    "autumn",
    "a city at night",
    "bread",
    "a river",
    "snow",
    "a library",
    "the moon",
    "a garden",
    "trains",
    "a storm",
    "coffee",
    "the desert",
    "a bridge",
    "music",
    "a forest",
    "glass",
    "a harbour",
    "the wind",
]


def prompt(i: int, salt: str) -> str:
    """Distinct prompts (so llama.cpp's prefix cache cannot answer from a previous request)."""
    return f"[{salt}-{i}] Write one short sentence about {_TOPICS[i % len(_TOPICS)]}."


def story(i: int, salt: str) -> str:
    """A distinct text that base and instruct models alike continue for many tokens."""
    return f"Story {salt}-{i}: a long tale about {_TOPICS[i % len(_TOPICS)]}. Once upon a time,"


@dataclass
class Answer:
    model: str
    status: int
    seconds: float
    completion_tokens: int
    end: float


def session(keep_alive: bool = True) -> aiohttp.ClientSession:
    # The worker secret on every request: "direct" calls workers, which require it.
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=300),
        headers={"Authorization": f"Bearer {WORKER_SECRET}"},
        connector=aiohttp.TCPConnector(force_close=not keep_alive),
    )


async def ask(
    http: aiohttp.ClientSession, base: str, model: str, text: str, max_tokens: int
) -> Answer:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    began = time.monotonic()
    async with http.post(base + "/v1/chat/completions", json=body) as resp:
        data = await resp.json(content_type=None)
    end = time.monotonic()
    tokens = int((data.get("usage") or {}).get("completion_tokens", 0)) if resp.ok else 0
    return Answer(model, resp.status, end - began, tokens, end)


async def closed_clients(
    base: str, model: str, clients: int, seconds: float, max_tokens: int, salt: str
) -> tuple[list[Answer], float]:
    """`clients` loops asking one after another until `seconds` pass; returns answers, window."""

    def once(http: aiohttp.ClientSession, n: int) -> Awaitable[Answer]:
        return ask(http, base, model, prompt(n, salt), max_tokens)

    return await _closed_loop(clients, seconds, once, keep_alive=True)


class _Ended(Protocol):
    end: float


T = TypeVar("T", bound=_Ended)


async def _closed_loop(
    clients: int,
    seconds: float,
    once: Callable[[aiohttp.ClientSession, int], Awaitable[T]],
    keep_alive: bool,
) -> tuple[list[T], float]:
    """`clients` loops, each calling `once` (with its n-th request's number) until `seconds`
    pass; the results and the window up to the last one's end."""
    began = time.monotonic()
    answers: list[T] = []

    async def client(c: int, http: aiohttp.ClientSession) -> None:
        i = 0
        while time.monotonic() - began < seconds:
            answers.append(await once(http, c * 1000 + i))
            i += 1

    async with session(keep_alive) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    return answers, max(a.end for a in answers) - began


@dataclass
class Streamed:
    status: int
    ttft: float  # seconds to the first text
    completion_tokens: int
    end: float


async def ask_stream(
    http: aiohttp.ClientSession,
    base: str,
    model: str,
    text: str,
    max_tokens: int,
    ignore_eos: bool = False,
) -> Streamed:
    """A streamed /v1/completions (base and instruct models alike); tokens from the usage
    chunk, or one per text chunk where a server sends no usage. `ignore_eos` (llama-server's
    and our workers' extension): every answer runs to max_tokens, equal work everywhere."""
    body = {
        "model": model,
        "prompt": text,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    began, first, chunks, usage = time.monotonic(), 0.0, 0, None
    async with http.post(base + "/v1/completions", json=body) as resp:
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            data = json.loads(line[6:])
            usage = data.get("usage") or usage
            if any(choice.get("text") for choice in data.get("choices") or []):
                first = first or time.monotonic() - began
                chunks += 1
    tokens = int(usage.get("completion_tokens", chunks)) if usage else chunks
    return Streamed(resp.status, first, tokens if resp.ok else 0, time.monotonic())


async def closed_streams(
    base: str,
    model: str,
    clients: int,
    seconds: float,
    max_tokens: int,
    salt: str,
    ignore_eos: bool = False,
) -> tuple[list[Streamed], float]:
    """As closed_clients, streamed: each answer's time to first token and its tokens."""

    def once(http: aiohttp.ClientSession, n: int) -> Awaitable[Streamed]:
        return ask_stream(http, base, model, story(n, salt), max_tokens, ignore_eos)

    # A connection per stream: llama-server closes a kept-alive one after a stream, and a POST
    # is not retried; against model time, connecting to loopback costs nothing.
    return await _closed_loop(clients, seconds, once, keep_alive=False)


@dataclass
class Arrivals:
    """One streamed answer: when it began, and when each piece of its text arrived."""

    began: float
    status: int = 0
    times: list[float] = field(default_factory=list)

    @property
    def ttft(self) -> float | None:
        return self.times[0] - self.began if self.times else None


async def _stream_into(
    http: aiohttp.ClientSession,
    base: str,
    model: str,
    text: str,
    max_tokens: int,
    record: Arrivals,
) -> None:
    body = {
        "model": model,
        "prompt": text,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    async with http.post(base + "/v1/completions", json=body) as resp:
        record.status = resp.status
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"text":""' not in line:
                record.times.append(time.monotonic())


async def steady_streams(
    base: str,
    model: str,
    clients: int,
    warmup: float,
    seconds: float,
    max_tokens: int,
    salt: str,
) -> tuple[list[Arrivals], float, float]:
    """`clients` closed loops of streamed /v1/completions (ignore_eos: every answer runs to
    max_tokens) for `warmup` + `seconds`, then cut. What counts is the steady state: the text
    pieces that arrived within the window after the warm-up (one token each), and the TTFT of
    the answers begun in it; no ramp-up, no drain, no answer cut by the window's end lost.
    Returns the answers and the window's start and end."""
    began = time.monotonic()
    start, end = began + warmup, began + warmup + seconds
    answers: list[Arrivals] = []

    async def client(c: int, http: aiohttp.ClientSession) -> None:
        for i in itertools.count():
            answers.append(record := Arrivals(time.monotonic()))
            await _stream_into(http, base, model, story(c * 1000 + i, salt), max_tokens, record)

    async with session(keep_alive=False) as http:
        loops = [asyncio.ensure_future(client(c, http)) for c in range(clients)]
        await asyncio.sleep(end - time.monotonic())
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    return answers, start, end
