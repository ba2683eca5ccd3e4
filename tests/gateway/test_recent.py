"""The status page's recent requests and per-second figures (gateway/observe/recent.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.observe.recent import Recent


def record(n: int, status: int = 200, ttft: float | None = None) -> dict[str, Any]:
    return {"request_id": f"r{n}", "status": status, "ttft_ms": ttft}


def test_the_last_requests_come_newest_first_and_only_as_many_as_kept() -> None:
    recent = Recent(size=3)
    for n in range(5):
        recent.add(record(n))
    assert [r["request_id"] for r in recent.requests(10)] == ["r4", "r3", "r2"]
    assert [r["request_id"] for r in recent.requests(1)] == ["r4"]
    assert recent.requests(0) == []
    assert all(isinstance(r["time"], float) for r in recent.requests(3))


def test_seconds_count_requests_errors_mean_ttft_and_the_deepest_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.2]
    monkeypatch.setattr("gateway.observe.recent.time.time", lambda: clock[0])
    recent = Recent(window=2)
    recent.add(record(1, ttft=10.0))
    recent.add(record(2, status=503))
    recent.add(record(3, ttft=30.0))
    recent.sample(4)
    recent.sample(2)
    clock[0] = 1001.5
    recent.add(record(4))
    assert recent.series() == [
        {"time": 1000, "requests": 3, "errors": 1, "ttft_ms": 20.0, "queued": 4},
        {"time": 1001, "requests": 1, "errors": 0, "ttft_ms": None, "queued": 0},
    ]
    clock[0] = 1003.0
    recent.sample(1)  # a third second: the oldest leaves the window
    assert [s["time"] for s in recent.series()] == [1001, 1003]
