"""Scenario 10: multi-turn conversations over 2 replicas of SmolLM2, prefix-affinity routing
against least-busy, same run: time to first token of the turns after the first, and throughput.

8 conversations, each a long system prompt of its own and then turns that re-send everything
before them (as chat clients do), answered with a few tokens; 4 clients take the next turn of a
conversation at random (users coming back to their chats). The replicas have 4 slots each, and a
worker gives a request the slot whose last prompt it extends, so the 2 replicas can hold all 8
conversations' KV caches, 4 each: a turn that reaches the replica of its previous turn evaluates
only the new message; one that reaches the other replica evaluates it all and evicts another
conversation there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..common import Result, pin_self
from ..llm_client import session
from ..procs import Proc, start_gateway
from ..stats import percentile
from .models import SMOLLM, gateway_model

__all__ = ["affinity"]

CONVERSATIONS, CLIENTS, TURNS, MAX_TOKENS = 8, 4, 6, 8
ROUNDS = 2  # each mode runs this many times, alternating
SYSTEM = (
    "You are a patient assistant for a hardware shop. Answer in one short sentence. "
    "Always stay polite, never invent prices, and suggest asking staff when unsure. "
) * 4
MODES = ("prefix_affinity", "least_busy")


@dataclass
class Turn:
    turn: int  # 0: the conversation's first
    ttft: float
    tokens: int


async def affinity() -> Result:
    pin_self({0, 1})
    res = Result(
        "affinity",
        "10. Prefix-affinity routing: multi-turn TTFT over 2 replicas",
        "nothing pinned; 2 replicas x 4 slots x 1 thread",
        [
            "routing",
            "round",
            "first turns ttft p50 ms",
            "later turns ttft p50 ms",
            "later turns ttft p99 ms",
            "tokens/s",
            "errors",
        ],
    )
    with contextlib.ExitStack() as stack:
        gateways = {mode: _start(stack, mode) for mode in MODES}
        for round_ in range(ROUNDS):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                res.rows.append(await _measure(gateways[mode], mode, round_))
    _verdict(res)
    return res


def _start(stack: contextlib.ExitStack, mode: str) -> Proc:
    config = {**gateway_model(SMOLLM, 2, 1), "capacity": 4, "routing": mode}
    proc = start_gateway(f"affinity-{mode}", [config], None)
    stack.callback(proc.stop)
    return proc


async def _measure(proc: Proc, mode: str, round_: int) -> dict[str, Any]:
    began = time.monotonic()
    chats = [_Chat(f"{mode}{round_}-{c}") for c in range(CONVERSATIONS)]
    picker = random.Random(round_)  # the same order of turns for both modes
    async with session(keep_alive=True) as http:
        runs = await asyncio.gather(
            *(_client(http, proc.url, chats, picker) for _ in range(CLIENTS)),
            return_exceptions=True,
        )
    window = time.monotonic() - began
    turns = [t for run in runs if isinstance(run, list) for t in run]
    firsts = [t.ttft for t in turns if t.turn == 0]
    later = [t.ttft for t in turns if t.turn > 0]
    return {
        "routing": mode,
        "round": round_ + 1,
        "first turns ttft p50 ms": percentile(firsts, 50) * 1e3,
        "later turns ttft p50 ms": percentile(later, 50) * 1e3,
        "later turns ttft p99 ms": percentile(later, 99) * 1e3,
        "tokens/s": sum(t.tokens for t in turns) / window,
        "errors": sum(isinstance(run, BaseException) for run in runs),
    }


class _Chat:
    """One conversation: its messages so far, and whether a turn of it is in flight."""

    def __init__(self, who: str) -> None:
        self.who, self.busy, self.turns = who, False, 0
        self.messages = [{"role": "system", "content": f"[{who}] {SYSTEM}"}]


async def _client(
    http: aiohttp.ClientSession, base: str, chats: list[_Chat], picker: random.Random
) -> list[Turn]:
    """Take the next turn of a conversation at random (none in flight twice) until all are
    done: more conversations than clients, as users who come back to their chats."""
    turns = []
    while idle := [c for c in chats if not c.busy and c.turns < TURNS]:
        chat = picker.choice(idle)
        chat.busy = True
        chat.messages.append({"role": "user", "content": _question(chat.who, chat.turns)})
        answer, done = await _ask(http, base, chat.messages)
        chat.messages.append({"role": "assistant", "content": answer})
        turns.append(Turn(chat.turns, done.ttft, done.tokens))
        chat.turns, chat.busy = chat.turns + 1, False
    return turns


def _question(who: str, turn: int) -> str:
    return (
        f"Customer {who}, question {turn}: which drill suits "
        f"brick walls, and what bits should I buy for {turn + 3} mm anchors?"
    )


async def _ask(
    http: aiohttp.ClientSession, base: str, messages: list[dict[str, str]]
) -> tuple[str, Turn]:
    body = {
        "model": SMOLLM[0],
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    began, first, text, tokens = time.monotonic(), 0.0, "", 0
    async with http.post(base + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            data = json.loads(line[6:])
            tokens = (data.get("usage") or {}).get("completion_tokens", tokens)
            for choice in data.get("choices") or []:
                piece = choice.get("delta", {}).get("content") or ""
                first = first or (time.monotonic() - began if piece else 0.0)
                text += piece
    return text, Turn(0, first, tokens)


def _verdict(res: Result) -> None:
    def mean(mode: str, column: str) -> float:
        values = [float(r[column]) for r in res.rows if r["routing"] == mode]
        return sum(values) / len(values)

    on, off = (mean(m, "later turns ttft p50 ms") for m in MODES)
    res.goal(
        "later turns' TTFT p50: affinity clearly below least-busy (<= 0.8x)",
        f"{on / off:.2f}x",
        on / off <= 0.8,
    )
    rate_on, rate_off = (mean(m, "tokens/s") for m in MODES)
    res.goal(
        "throughput: affinity no worse (>= 0.95x least-busy's tokens/s)",
        f"{rate_on / rate_off:.2f}x",
        rate_on / rate_off >= 0.95,
    )
    res.notes.append(
        f"{CONVERSATIONS} conversations of {TURNS} turns, {CLIENTS} clients taking the next "
        f"turn of an idle conversation at random (the same order for both modes; a "
        f"~{len(SYSTEM) // 4}-token system prompt unique to the conversation, then each turn "
        f"re-sends the history; max_tokens {MAX_TOKENS}, temperature 0, streamed). Both "
        "gateways run at once (idle while the other is measured), modes alternate each round; "
        "ratios are of the means over rounds. SmolLM2, 2 replicas x capacity 4 x 1 thread."
    )
