"""Weighted fair queueing of one model's waiting requests across keys: a pure data structure.

Start-time fair queueing: a request is tagged, as it arrives, with a virtual finish time,
max(virtual now, its key's previous tag) + 1/weight, and the next request served is the one with
the smallest tag among the keys allowed to start one. So while a model's replicas are all busy,
keys with requests waiting are served in proportion to their weights whatever their arrival
rates; one key's requests stay first come, first served; and a key that was idle does not bank
credit (its tags start from virtual now). A retry goes ahead of everything: it had its turn.

Admission is fair too (`has_room`): a queue at its limit still takes a request of a key holding
less than its weight's share of that limit among the keys waiting, up to twice the limit in
all, so one key that floods the queue cannot shut the others out of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")
_RETRY = float("-inf")  # the tag of a request sent back after its replica failed


class FairQueue(Generic[T]):
    """Items queued by key; pop() serves the smallest virtual finish tag among eligible keys."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[tuple[float, T]]] = {}  # only keys with items
        self._weights: dict[str, float] = {}  # each key's weight, as its latest push gave it
        self._last: dict[str, float] = {}  # each key's latest tag
        self._now = 0.0  # virtual time: the tag of the item served last
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[T]:
        for queue in self._queues.values():
            for _, item in queue:
                yield item

    def push(self, key: str, weight: float, item: T, first: bool = False) -> int:
        """Queue `item` for `key`; return how many queued items are ahead of it now."""
        queue = self._queues.setdefault(key, deque())
        self._weights[key] = weight
        self._size += 1
        if first:
            queue.appendleft((_RETRY, item))
            return sum(1 for q in self._queues.values() for tag, _ in q if tag == _RETRY) - 1
        tag = max(self._now, self._last.get(key, self._now)) + 1.0 / weight
        self._last[key] = tag
        queue.append((tag, item))
        return sum(1 for q in self._queues.values() for earlier, _ in q if earlier <= tag) - 1

    def has_room(self, key: str, weight: float, limit: int) -> bool:
        """Whether a request of `key` may join a queue of at most `limit`: while it is shorter,
        or, up to 2 x limit, while the key holds less than its share of `limit` by weight among
        the keys waiting (alone, all of it)."""
        if self._size < limit:
            return True
        if self._size >= 2 * limit:
            return False
        others = sum(self._weights[k] for k in self._queues if k != key)
        return len(self._queues.get(key, ())) < limit * weight / (weight + others)

    def pop(self, eligible: Callable[[str], bool] = lambda _: True) -> tuple[str, T] | None:
        """The next item to serve and its key, of a key `eligible` admits; None if none."""
        best: str | None = None
        best_tag = 0.0
        for key, queue in self._queues.items():
            tag = queue[0][0]
            if (best is None or tag < best_tag) and eligible(key):
                best, best_tag = key, tag
        if best is None:
            return None
        _, item = self._queues[best].popleft()
        if not self._queues[best]:
            del self._queues[best]
        self._size -= 1
        self._now = max(self._now, best_tag)
        return best, item

    def remove(self, item: T) -> bool:
        """Take `item` out (its request gave up waiting); False if it is not queued."""
        for key, queue in self._queues.items():
            for entry in queue:
                if entry[1] is item:
                    queue.remove(entry)
                    if not queue:
                        del self._queues[key]
                    self._size -= 1
                    return True
        return False
