"""Scenario 11: three models in a memory budget that holds two, loaded on demand.

The seed's own case: llama-cpp-python's multi-model server keeps one model loaded and swaps on
every change of model. Our gateway with `replicas: {min: 0, max: 1}` and a RAM budget that fits
any two of the three (SmolLM2, Gemma 3 270M, and SmolLM2 again under another name) loads on
demand and evicts the least recently used idle one; an always-on pool of all three (a budget
that fits them) is the ceiling. Sequential requests, in two patterns: round-robin over the three
(least-recently-used eviction's worst case: every request misses), and two hot models with the
third every sixth request.
"""

from __future__ import annotations

from typing import Any

from ..common import Result, pin_self, round_order
from ..llm_client import Answer, ask, prompt, session
from ..peers import start_llama_cpp_server
from ..procs import Proc, start_gateway
from ..stats import percentile, spread
from .models import GEMMA, SMOLLM, gateway_model, server_model

__all__ = ["on_demand"]

REQUESTS, MAX_TOKENS, THREADS, ROUNDS = 18, 8, 2, 2
SMOLLM_B = ("smollm2-b", SMOLLM[1])
MODELS = [SMOLLM, GEMMA, SMOLLM_B]
PATTERNS = {
    "round-robin": [MODELS[i % 3][0] for i in range(REQUESTS)],
    "two hot, one cold": [MODELS[2 if i % 6 == 5 else i % 2][0] for i in range(REQUESTS)],
}
# check-config's estimates at n_ctx 2048: SmolLM2 260 MiB, Gemma 437 MiB: any two, never three.
BUDGET = "760MiB"
TARGETS = ("gateway on demand", "llama_cpp.server", "gateway always-on")


async def on_demand() -> Result:
    pin_self({0, 1})
    res = Result(
        "on_demand",
        "11. Three models, a budget for two: loaded on demand",
        f"nothing pinned; each model {THREADS} threads",
        ["pattern", "target", "total s", "per-request p50 s", "per-request max s", "errors"],
    )
    procs = _start()
    try:
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {
            (p, t): [] for p in PATTERNS for t in TARGETS
        }
        for round_ in range(ROUNDS):
            for pattern in PATTERNS:
                for target in round_order(list(TARGETS), round_):
                    runs[pattern, target].append(
                        await _run(procs[target].url, PATTERNS[pattern], f"r{round_}")
                    )
    finally:
        for proc in procs.values():
            proc.stop()
    for (pattern, target), rounds in runs.items():
        res.rows.append(_row(pattern, target, rounds))
    _verdict(res)
    return res


def _start() -> dict[str, Proc]:
    lazy = [{**gateway_model(m, 1, THREADS), "replicas": {"min": 0, "max": 1}} for m in MODELS]
    always = [gateway_model(m, 1, THREADS) for m in MODELS]
    servers = [server_model(m, THREADS) for m in MODELS]
    return {
        "gateway on demand": start_gateway(
            "on-demand", lazy, None, extra={"memory": {"cpu": BUDGET}}
        ),
        "llama_cpp.server": start_llama_cpp_server("llama-cpp-server-on-demand", servers),
        "gateway always-on": start_gateway("always-on", always, None),
    }


async def _run(base: str, order: list[str], salt: str) -> dict[str, Any]:
    answers: list[Answer] = []
    async with session() as http:
        for i, model in enumerate(order):
            answers.append(await ask(http, base, model, prompt(i, salt), MAX_TOKENS))
    latencies = [a.seconds for a in answers]
    return {
        "total": sum(latencies),
        "p50": percentile(latencies, 50),
        "max": max(latencies),
        "errors": sum(a.status != 200 for a in answers),
    }


def _row(pattern: str, target: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pattern": pattern,
        "target": target,
        "total s": spread([r["total"] for r in rounds])["median"],
        "per-request p50 s": spread([r["p50"] for r in rounds])["median"],
        "per-request max s": max(r["max"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
    }


def _verdict(res: Result) -> None:
    def total(pattern: str, target: str) -> float:
        (row,) = [r for r in res.rows if (r["pattern"], r["target"]) == (pattern, target)]
        return float(row["total s"])

    for pattern in PATTERNS:
        ours, peer = total(pattern, TARGETS[0]), total(pattern, TARGETS[1])
        ceiling = total(pattern, TARGETS[2])
        res.notes.append(
            f"{pattern}: on demand / llama_cpp.server = {ours / peer:.2f}x, "
            f"on demand / always-on = {ours / ceiling:.2f}x"
        )
    hot = total("two hot, one cold", TARGETS[0]) / total("two hot, one cold", TARGETS[1])
    res.goal(
        "two hot models and a cold one: on demand clearly faster than llama_cpp.server "
        "(<= 0.8x its total)",
        f"{hot:.2f}x",
        hot <= 0.8,
    )
    res.notes.append(
        f"{REQUESTS} sequential chat requests per pattern and round (max_tokens {MAX_TOKENS}, "
        f"temperature 0, distinct prompts), {ROUNDS} rounds, targets in rotating order; the "
        f"on-demand gateway has memory.cpu {BUDGET} (any two of the three models fit), "
        "scaling at its defaults (min_residency auto: a replica's own load time; on 2 CPUs no "
        "spare worker), and keeps what it loaded across rounds. llama_cpp.server holds one model "
        "at a time and swaps it in its own process; the gateway starts a worker process for each "
        "load (~0.5 s of interpreter and imports before the model's own load)."
    )
