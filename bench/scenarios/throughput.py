"""Scenario 2: open-loop rates, non-streaming; the highest rate held by each target."""

from __future__ import annotations

from typing import Any

from ..common import Result, chat_body, target
from ..loadgen import RunResult, Target, open_loop
from ..procs import Proc, cpu_seconds
from ..stack import PINNING, Stack
from ..stats import percentile, spread

__all__ = ["RATES", "throughput"]

RATES = [25, 50, 100, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2400]
ROUNDS, SECONDS, MAX_ADDED_P99_MS, STRIKES = 3, 1.0, 10.0, 2


async def throughput(stack: Stack) -> Result:
    """Every rate: ROUNDS interleaved 1 s Poisson runs per target; a target stops after it
    misses (errors, or added p99 > 10 ms) STRIKES rates in a row."""
    body = chat_body()
    targets = {name: [target(u, body) for u in urls] for name, urls in stack.urls().items()}
    procs = {"gateway": stack.gateway, "litellm": stack.litellm}
    strikes = dict.fromkeys(targets, 0)
    steps: list[dict[str, Any]] = []
    for rate in RATES:
        live = [n for n in targets if n == "direct" or strikes[n] < STRIKES]
        if live == ["direct"]:
            break
        step = await _step(rate, {n: targets[n] for n in live}, procs)
        steps.append(step)
        for name, fig in step["targets"].items():
            if name != "direct":
                strikes[name] = 0 if fig["held"] else strikes[name] + 1
    return _result(steps, stack)


async def _step(
    rate: int, targets: dict[str, list[Target]], procs: dict[str, Proc | None]
) -> dict[str, Any]:
    runs: dict[str, list[RunResult]] = {n: [] for n in targets}
    cpu: dict[str, list[float]] = {n: [] for n in targets}
    names = list(targets)
    for r in range(ROUNDS):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            proc = procs.get(name)
            before = cpu_seconds(proc.pid) if proc else 0.0
            run = await open_loop(targets[name], rate, SECONDS, seed=r + 1, timeout=5.0)
            runs[name].append(run)
            if proc:
                cpu[name].append((cpu_seconds(proc.pid) - before) / max(len(run.ok), 1))
    return {"rate": rate, "targets": {n: _figures(n, runs, cpu[n]) for n in names}}


def _figures(name: str, runs: dict[str, list[RunResult]], cpu: list[float]) -> dict[str, Any]:
    mine, direct = runs[name], runs["direct"]
    p99 = [percentile(r.latencies(), 99) * 1e3 for r in mine]
    added = [a - percentile(d.latencies(), 99) * 1e3 for a, d in zip(p99, direct, strict=True)]
    errors = sum(r.errors for r in mine)
    added_p99 = spread(added)
    return {
        "achieved": spread([len(r.ok) / r.window for r in mine])["median"],
        "p50": spread([percentile(r.latencies(), 50) * 1e3 for r in mine])["median"],
        "p99": spread(p99)["median"],
        "added_p99": added_p99,
        "errors": errors,
        "send_lag_p99": max(percentile(r.send_lag(), 99) * 1e3 for r in mine),
        "cpu_us_per_req": spread(cpu)["median"] * 1e6 if cpu else None,
        "held": errors == 0 and (name == "direct" or added_p99["median"] <= MAX_ADDED_P99_MS),
    }


def _held(steps: list[dict[str, Any]], name: str) -> int:
    held = [s["rate"] for s in steps if s["targets"].get(name, {}).get("held")]
    return max(held, default=0)


def _result(steps: list[dict[str, Any]], stack: Stack) -> Result:
    res = Result(
        "throughput",
        "2. Throughput, open loop, non-streaming",
        PINNING,
        [
            "offered/s",
            "target",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "added p99 ms",
            "added p99 min-max",
            "errors",
            "CPU us/req",
            "held",
        ],
    )
    for step in steps:
        for name, fig in step["targets"].items():
            a = fig["added_p99"]
            res.rows.append(
                {
                    "offered/s": step["rate"],
                    "target": name,
                    "achieved/s": fig["achieved"],
                    "p50 ms": fig["p50"],
                    "p99 ms": fig["p99"],
                    "errors": fig["errors"],
                    "added p99 ms": None if name == "direct" else a["median"],
                    "added p99 min-max": None
                    if name == "direct"
                    else f"{a['min']:.2f} - {a['max']:.2f}",
                    "CPU us/req": fig["cpu_us_per_req"],
                    "held": fig["held"],
                }
            )
    res.data = {"steps": steps, "held": {n: _held(steps, n) for n in stack.urls()}}
    ceiling = res.data["held"]["direct"]
    gw = res.data["held"]["gateway"]
    res.goal("over 1,500 requests/s held (0 errors, added p99 <= 10 ms)", f"{gw} req/s", gw > 1500)
    lite = res.data["held"].get("litellm")
    if lite is not None:
        ratio = gw / lite if lite else None
        res.data["ratio_vs_litellm"] = ratio
        figure = f"{gw} / {lite} = {ratio:.1f}x" if ratio else "LiteLLM held no rate tested"
        res.goal("at least 5x LiteLLM's held rate", figure, None if ratio is None else ratio >= 5)
    res.notes.append(
        f"each rate: {ROUNDS} interleaved {SECONDS:g} s Poisson runs per target; "
        "latency from the scheduled send time; held = 0 errors and median "
        f"added p99 <= {MAX_ADDED_P99_MS:g} ms; direct = the same {len(stack.workers)} "
        "stand-in workers, arrivals round-robin"
    )
    res.notes.append(
        f"upstream ceiling: direct held up to {ceiling} req/s; a gateway figure "
        "within 10% of it is bounded by the stand-in + load generator core, "
        "not by the gateway. CPU us/req = the proxy process's CPU time per "
        "answered request (1e6 / it = its one-core capacity)"
    )
    res.notes.extend(stack.notes)
    return res
