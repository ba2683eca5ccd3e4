"""Scenario 1: added latency at concurrency 1, direct vs through the gateway (vs LiteLLM)."""

from __future__ import annotations

from typing import Any

from ..common import Result, chat_body, round_order, target
from ..loadgen import closed_loop
from ..stack import PINNING, Stack
from ..stats import min_max, percentile, spread, summary

__all__ = ["ROUNDS", "latency"]

ROUNDS, PER_ROUND, WARMUP = 5, 800, 200
COLUMNS = [
    "target",
    "p50",
    "p99",
    "added p50",
    "added p50 min-max",
    "added p99",
    "added p99 min-max",
    "requests",
]


async def latency(stack: Stack) -> Result:
    """Interleaved rounds of PER_ROUND sequential requests to each target, order rotating."""
    body = chat_body()
    urls = stack.urls(with_bare=True)
    targets = {name: target(found[0], body) for name, found in urls.items()}
    for t in targets.values():
        await closed_loop(t, 1, count=WARMUP)
    samples: dict[str, list[list[float]]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(ROUNDS):
        for name in round_order(names, r):
            run = await closed_loop(targets[name], 1, count=PER_ROUND)
            assert run.errors == 0, f"{name}: {run.errors} errors at concurrency 1"
            samples[name].append(run.latencies())
    return _result(samples, stack)


def _added(samples: dict[str, list[list[float]]], name: str, q: float) -> list[float]:
    return [
        (percentile(a, q) - percentile(d, q)) * 1e3
        for a, d in zip(samples[name], samples["direct"], strict=True)
    ]


def _result(samples: dict[str, list[list[float]]], stack: Stack) -> Result:
    res = Result("latency", "1. Added latency, concurrency 1 (ms)", PINNING, list(COLUMNS))
    for name, rounds in samples.items():
        pooled = [x for r in rounds for x in r]
        res.rows.append(_row(samples, name, pooled))
        res.data[name] = _quantiles(pooled)
    gw = next(row for row in res.rows if row["target"] == "gateway")
    res.goal("added p50 <= 1 ms", f"{gw['added p50']:.3f} ms", gw["added p50"] <= 1.0)
    res.goal("added p99 <= 3 ms", f"{gw['added p99']:.3f} ms", gw["added p99"] <= 3.0)
    res.notes.append(
        f"{ROUNDS} interleaved rounds x {PER_ROUND} requests per target "
        f"(after {WARMUP} warm-up); added = target minus direct, per round; "
        "median of rounds [min-max]; stand-in answer ~1.6 KB (200 tokens), token_delay 0"
    )
    if "gateway-bare" in samples:
        _recording_cost(res, samples)
    res.notes.append(stack.describe())
    res.notes.extend(stack.notes)
    return res


def _recording_cost(res: Result, samples: dict[str, list[list[float]]]) -> None:
    """What metrics and the request log add: gateway minus gateway-bare, per round."""
    for q in (50, 99):
        cost = spread(
            [
                (percentile(on, q) - percentile(off, q)) * 1e3
                for on, off in zip(samples["gateway"], samples["gateway-bare"], strict=True)
            ]
        )
        res.data[f"recording_cost_p{q}_ms"] = cost
        res.notes.append(
            f"metrics + request log cost at p{q}: {cost['median']:.3f} ms "
            f"[{min_max(cost, 3)}] (gateway, both on as by default, minus gateway-bare, a "
            "second gateway with server.metrics: false and the log at warning; its own "
            "stand-in workers, same settings, same cores)"
        )


def _row(samples: dict[str, list[list[float]]], name: str, pooled: list[float]) -> dict[str, Any]:
    """Pooled p50/p99 of one target; a proxy's added figures too (median of rounds, min-max)."""
    s = summary(pooled)
    row: dict[str, Any] = {"target": name, "p50": s["p50"], "p99": s["p99"], "requests": s["n"]}
    if name != "direct":
        p50, p99 = spread(_added(samples, name, 50)), spread(_added(samples, name, 99))
        row |= {
            "added p50": p50["median"],
            "added p50 min-max": min_max(p50, 3),
            "added p99": p99["median"],
            "added p99 min-max": min_max(p99, 3),
            "added_p50": p50,
            "added_p99": p99,
        }
    return row


def _quantiles(values: list[float]) -> list[float]:
    """Latency (ms) at 0.5% steps, for the distribution plot."""
    return [percentile(values, q / 2) * 1e3 for q in range(201)]
