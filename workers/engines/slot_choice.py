"""Which free slot a request goes to: the one whose last request shares the longest beginning
with it, so its KV cache already holds that prefix, as llama-server picks slots by prompt
similarity; else the least recently used one. Requests are compared by their text before the
chat template and the tokenizer run (a cheap stand-in for their tokens: a shared text prefix
renders to a shared token prefix). Pure: the worker keeps the texts and applies the choice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SIMILARITY", "input_text", "pick_slot", "shared_length"]


SIMILARITY = 0.5  # the share of a slot's last text a request must begin with to reuse it


def pick_slot(free: Sequence[int], last: Mapping[int, str], text: str) -> int:
    """The free slot whose last request's text shares the most leading characters with `text`,
    if `text` begins with at least SIMILARITY of that slot's text (a conversation's next turn
    does); otherwise the least recently used free slot (the start of `free`), which leaves the
    caches of recent conversations for their next turn."""
    best, best_shared = free[0], 0
    for slot in free:
        seen = last.get(slot, "")
        shared = shared_length(seen, text)
        if shared > best_shared and shared >= SIMILARITY * len(seen):
            best, best_shared = slot, shared
    return best


def shared_length(a: str, b: str) -> int:
    """How many leading characters `a` and `b` have in common: a binary search over slices
    compared in C, not a Python loop over characters (a prompt may be megabytes)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def input_text(given: Any) -> str:
    """A request's input (a prompt, prompts or messages) as one string to compare."""
    return given if isinstance(given, str) else json.dumps(given, ensure_ascii=False)
