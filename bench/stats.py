"""Percentiles and per-round medians with their spread."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

__all__ = ["Spread", "min_max", "percentile", "spread", "summary"]


class Spread(TypedDict):
    """The median of per-round figures, their min and max, and the figures themselves."""

    median: float
    min: float
    max: float
    rounds: list[float]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float], scale: float = 1e3) -> dict[str, float]:
    """p50/p90/p99/max/mean of `values` times `scale` (seconds -> ms by default), and n."""
    n = len(values)
    mean = sum(values) / n * scale if n else math.nan
    return {
        "n": n,
        "p50": percentile(values, 50) * scale,
        "p90": percentile(values, 90) * scale,
        "p99": percentile(values, 99) * scale,
        "max": max(values) * scale if n else math.nan,
        "mean": mean,
    }


def spread(per_round: Sequence[float]) -> Spread:
    """The median of per-round figures with their min and max."""
    return {
        "median": percentile(per_round, 50),
        "min": min(per_round) if per_round else math.nan,
        "max": max(per_round) if per_round else math.nan,
        "rounds": list(per_round),
    }


def min_max(figures: Spread, digits: int) -> str:
    """`min - max` of a spread, each with `digits` decimals."""
    return f"{figures['min']:.{digits}f} - {figures['max']:.{digits}f}"
