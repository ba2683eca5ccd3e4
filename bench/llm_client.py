"""A plain client for the real-model scenarios (4, 5), where a request takes ~0.1-2 s.

aiohttp suffices here: client overhead is microseconds against model time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from .procs import WORKER_SECRET

__all__ = ["Answer", "ask", "closed_clients", "prompt", "session"]

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


@dataclass
class Answer:
    model: str
    status: int
    seconds: float
    completion_tokens: int
    end: float


def session() -> aiohttp.ClientSession:
    # The worker secret on every request: "direct" calls workers, which require it.
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=300),
        headers={"Authorization": f"Bearer {WORKER_SECRET}"},
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
    began = time.monotonic()
    answers: list[Answer] = []

    async def client(c: int, http: aiohttp.ClientSession) -> None:
        i = 0
        while time.monotonic() - began < seconds:
            answers.append(await ask(http, base, model, prompt(c * 1000 + i, salt), max_tokens))
            i += 1

    async with session() as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    return answers, max(a.end for a in answers) - began
