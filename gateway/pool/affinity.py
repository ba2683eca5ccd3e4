"""Cache-affinity routing: send a prompt to the replica that most likely holds its prefix's KV.

Chat turns of one conversation re-send everything before them, and a llama.cpp replica (a slot
of one) reuses the KV cache of the longest prefix it has seen, so the replica that served the
previous turn starts the next one with most of the prompt already evaluated. As llm-d's
approximate prefix scorer and vLLM production-stack's `prefixaware` router do: the prompt text
is cut into fixed-size blocks with chained hashes (a block's hash covers everything before it),
each replica remembers the hashes it was sent lately (a bounded LRU), and a free replica scores
the share of the prompt's blocks it holds, less its load, so a hot replica does not collect
every conversation. With no match anywhere it is least-busy routing. Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

__all__ = [
    "BLOCKS_PER_REPLICA",
    "BLOCK_CHARS",
    "LOAD_WEIGHT",
    "PrefixTable",
    "prefix_hashes",
    "prompt_text",
]

BLOCK_CHARS = 256  # a block of prompt text: about 64 tokens
BLOCKS_PER_REPLICA = 8192  # what a replica's LRU keeps: ~2 M characters of prompts
LOAD_WEIGHT = 0.5  # a full replica loses half a prompt's worth of matched blocks
_MAX_BLOCKS = 512  # a longer prompt is scored on its first 128 K characters


class Candidate(Protocol):
    """What the table needs of a replica: a stable address and its load."""

    @property
    def api(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def capacity(self) -> int: ...


def prompt_text(body: dict[str, Any]) -> str:
    """The text a request's prompt prefix is made of, in the order the model reads it: the
    messages (chat), the prompt (completions), or the instructions and input (Responses)."""
    parts: list[Any] = []
    if "instructions" in body:
        parts.append(body["instructions"])
    for field in ("messages", "prompt", "input"):
        value = body.get(field)
        if isinstance(value, list) and field != "prompt":
            parts += [_message(item) for item in value]
        elif value is not None:
            parts.append(value)
    return "".join(p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in parts)


def _message(item: Any) -> str:
    if not isinstance(item, dict):
        return json.dumps(item, sort_keys=True)
    content = item.get("content")
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
    return f"\x1e{item.get('role', '')}\x1f{text}"


def prefix_hashes(text: str, block: int = BLOCK_CHARS) -> list[bytes]:
    """The chained hash of each whole block of `text` (a trailing part block is left out: the
    next turn's prompt will not end there)."""
    data, hashes, previous = text.encode(), [], b""
    for start in range(0, min(len(data) // block, _MAX_BLOCKS) * block, block):
        previous = hashlib.blake2b(previous + data[start : start + block], digest_size=8).digest()
        hashes.append(previous)
    return hashes


R = TypeVar("R", bound=Candidate)


class PrefixTable:
    """The prompt blocks each replica (by its `api` address) was sent lately."""

    def __init__(self, per_replica: int = BLOCKS_PER_REPLICA) -> None:
        self._per_replica = per_replica
        self._seen: dict[str, OrderedDict[bytes, None]] = {}

    def record(self, replica: str, hashes: Sequence[bytes]) -> None:
        """`replica` was sent a prompt with these blocks: it holds them now, newest last."""
        seen = self._seen.setdefault(replica, OrderedDict())
        for block in hashes:
            seen[block] = None
            seen.move_to_end(block)
        while len(seen) > self._per_replica:
            seen.popitem(last=False)

    def forget(self, replica: str) -> None:
        """The replica is gone (or restarted: its cache with it)."""
        self._seen.pop(replica, None)

    def matched(self, replica: str, hashes: Sequence[bytes]) -> int:
        """How many leading blocks of the prompt `replica` holds. Hashes are chained, so the
        longest held block tells: search from the end."""
        seen = self._seen.get(replica)
        if not seen:
            return 0
        for count in range(len(hashes), 0, -1):
            if hashes[count - 1] in seen:
                return count
        return 0

    def pick(self, free: Sequence[R], hashes: Sequence[bytes]) -> R | None:
        """The free replica with the best share of the prompt's blocks less its load; the least
        busy where none holds any (the first on ties, as least-busy routing picks)."""
        if not free:
            return None
        if not hashes:
            return min(free, key=lambda r: r.in_flight / r.capacity)
        return max(free, key=lambda r: self._score(r, hashes))

    def _score(self, replica: Candidate, hashes: Sequence[bytes]) -> tuple[float, float]:
        share = self.matched(replica.api, hashes) / len(hashes)
        load = replica.in_flight / replica.capacity
        return share - LOAD_WEIGHT * load, -load
