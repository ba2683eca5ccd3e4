"""What the gateway did lately, from its own counters (no Prometheus needed): the last requests,
each as the request log writes it, and per-second figures of the last minutes (requests, errors,
mean time to first token, queue depth). `/admin/requests` and `/admin/stats` serve them; the
status page draws them."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Recent"]


@dataclass
class _Second:
    at: int  # Unix time, whole seconds
    requests: int = 0
    errors: int = 0  # answers with status >= 500
    ttft_sum: float = 0.0  # milliseconds, over the streams that had a first token
    ttft_count: int = 0
    queued: int = 0  # requests waiting for a replica, sampled once in the second

    def view(self) -> dict[str, Any]:
        ttft = round(self.ttft_sum / self.ttft_count, 3) if self.ttft_count else None
        return {
            "time": self.at,
            "requests": self.requests,
            "errors": self.errors,
            "ttft_ms": ttft,
            "queued": self.queued,
        }


class Recent:
    """The last `size` requests and `window` seconds of per-second figures, in memory."""

    def __init__(self, size: int = 200, window: int = 600) -> None:
        self._requests: deque[dict[str, Any]] = deque(maxlen=size)
        self._seconds: deque[_Second] = deque(maxlen=window)

    def add(self, record: dict[str, Any]) -> None:
        """One finished request, as the request log has it."""
        now = time.time()
        self._requests.append({"time": round(now, 3), **record})
        second = self._second(int(now))
        second.requests += 1
        second.errors += record.get("status", 0) >= 500
        if record.get("ttft_ms") is not None:
            second.ttft_sum += record["ttft_ms"]
            second.ttft_count += 1

    def sample(self, queued: int) -> None:
        """The queue depth now (called once a second)."""
        second = self._second(int(time.time()))
        second.queued = max(second.queued, queued)

    def requests(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` requests, newest first."""
        return [self._requests[-i] for i in range(1, min(limit, len(self._requests)) + 1)]

    def series(self) -> list[dict[str, Any]]:
        """Per-second figures, oldest first; a second with nothing recorded is left out."""
        return [second.view() for second in self._seconds]

    def _second(self, at: int) -> _Second:
        if not self._seconds or self._seconds[-1].at < at:
            self._seconds.append(_Second(at))
        return self._seconds[-1]
