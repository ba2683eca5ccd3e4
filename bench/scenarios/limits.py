"""Scenario 8: what per-key limits cost: the gateway with auth off, with a limited key checked
in this process, and checked in Redis, at concurrency 1, interleaved in one run."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from ..common import Result, chat_body, round_order, target
from ..loadgen import closed_loop
from ..procs import WORKER_SECRET, Proc, cpu_seconds, gateway_workers, pin, start_gateway
from ..stack import GATEWAY_CPU, HEALTH, LOADGEN_CPU, PINNING
from ..stats import min_max, percentile, spread

__all__ = ["limits"]

ROUNDS, PER_ROUND, WARMUP = 24, 300, 200
REDIS = "redis://127.0.0.1:6379/10"
STANDIN = {"token_delay": 0.0, "tokens": 200}
# Every target gets the same Authorization header (the workers' secret, bench/common.py): to the
# keyed gateways it is the key. Limits high enough never to refuse, so every check runs in full.
KEY = {
    "name": "bench",
    "key_sha256": hashlib.sha256(WORKER_SECRET.encode()).hexdigest(),
    "rpm": 10**9,
    "tpm": 10**12,
    "max_concurrent": 10**6,
    "admin": True,
}
SETUPS: dict[str, dict[str, Any]] = {
    "open": {},
    "limits-local": {"auth": {"keys": [KEY]}},
    "limits-redis": {"auth": {"keys": [KEY]}, "redis": {"url": REDIS}},
}
COLUMNS = [
    "target",
    "p50",
    "p99",
    "added p50",
    "added p50 min-max",
    "cost p50",
    "cost p50 min-max",
    "gateway cpu us/req",
    "cpu cost us/req",
    "requests",
]


@contextlib.contextmanager
def _gateways() -> Iterator[dict[str, Proc]]:
    """One gateway per setup on core 0, each over its own stand-in worker on core 1."""
    started: dict[str, Proc] = {}
    model = {
        "name": "mock",
        "engine": "standin",
        "replicas": 1,
        "capacity": 4,
        "standin": STANDIN,
        "max_queue": 1000,
    }
    try:
        for name, extra in SETUPS.items():
            started[name] = start_gateway(
                f"limits-{name}", [model], cpus=str(GATEWAY_CPU), extra={"health": HEALTH, **extra}
            )
            for worker in gateway_workers(started[name]):
                pin(int(worker["pid"]), {LOADGEN_CPU})
        yield started
    finally:
        for proc in started.values():
            proc.stop()


async def limits() -> Result:
    with _gateways() as gateways:
        direct = gateway_workers(gateways["open"])[0]["url"]
        urls = {"direct": direct, **{name: proc.url for name, proc in gateways.items()}}
        targets = {name: target(url, chat_body()) for name, url in urls.items()}
        for t in targets.values():
            await closed_loop(t, 1, count=WARMUP)
        samples: dict[str, list[list[float]]] = {name: [] for name in targets}
        cpu: dict[str, list[float]] = {name: [] for name in gateways}
        for r in range(ROUNDS):
            for name in round_order(list(targets), r):
                pid = gateways[name].pid if name in gateways else None
                before = cpu_seconds(pid) if pid else 0.0
                run = await closed_loop(targets[name], 1, count=PER_ROUND)
                assert run.errors == 0, f"{name}: {run.errors} errors"
                samples[name].append(run.latencies())
                if pid:  # the gateway's own CPU per request: far steadier than latency here
                    cpu[name].append((cpu_seconds(pid) - before) / PER_ROUND * 1e6)
    return _result(samples, cpu)


def _per_round(samples: dict[str, list[list[float]]], a: str, b: str) -> list[float]:
    """p50 of `a` minus p50 of `b`, per round, in ms."""
    return [
        (percentile(x, 50) - percentile(y, 50)) * 1e3
        for x, y in zip(samples[a], samples[b], strict=True)
    ]


def _result(samples: dict[str, list[list[float]]], cpu: dict[str, list[float]]) -> Result:
    res = Result(
        "limits", "8. What per-key limits cost, concurrency 1 (ms)", PINNING, list(COLUMNS)
    )
    for name, rounds in samples.items():
        pooled = [x for r in rounds for x in r]
        row: dict[str, Any] = {
            "target": name,
            "p50": percentile(pooled, 50) * 1e3,
            "p99": percentile(pooled, 99) * 1e3,
            "requests": len(pooled),
        }
        if name != "direct":
            added = spread(_per_round(samples, name, "direct"))
            row |= {"added p50": added["median"], "added p50 min-max": min_max(added, 3)}
        if name in cpu:
            row["gateway cpu us/req"] = spread(cpu[name])["median"]
        if name.startswith("limits"):
            cost = spread(_per_round(samples, name, "open"))
            cpu_cost = spread([a - b for a, b in zip(cpu[name], cpu["open"], strict=True)])
            row |= {
                "cost p50": cost["median"],
                "cost p50 min-max": min_max(cost, 3),
                "cost_p50": cost,
                "cpu cost us/req": cpu_cost["median"],
            }
        res.rows.append(row)
    local, remote = (
        next(r for r in res.rows if r["target"] == n)["cost p50"]
        for n in ("limits-local", "limits-redis")
    )
    res.goal("in-process limits add <= 0.1 ms p50", f"{local:.3f} ms", local <= 0.1)
    res.goal("Redis-backed limits add <= 0.5 ms p50", f"{remote:.3f} ms", remote <= 0.5)
    res.notes.append(
        f"{ROUNDS} interleaved rounds x {PER_ROUND} requests per target (after {WARMUP} "
        "warm-up); added = target minus direct, cost = target minus open (the gateway with "
        "auth off), per round; median of rounds [min-max]. limits-*: one key with rpm, tpm and "
        "max_concurrent set high enough never to refuse, so each request runs every check "
        "(gateway cpu: the gateway process's user + system CPU per request, per round) "
        f"(Redis: {REDIS}, the machine's own). Each gateway has its own stand-in worker; "
        "direct is the open gateway's"
    )
    return res
