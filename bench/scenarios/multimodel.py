"""Scenario 4, the headline: 20 requests alternating between two real models.

Our gateway (one worker per model) against llama-cpp-python's own multi-model server (one model
loaded at a time, swapped), and against calling our two workers directly (the ideal).
"""

from __future__ import annotations

from typing import Any

from ..common import Result, pin_self, round_order, target_cells
from ..llm_client import Answer, ask, prompt, session
from ..peers import start_llama_cpp_server
from ..procs import gateway_workers, start_gateway
from ..stats import Spread, percentile, spread
from .models import GEMMA, SMOLLM, gateway_model, server_model

__all__ = ["REQUESTS", "multimodel"]

REQUESTS, MAX_TOKENS, THREADS, ROUNDS = 20, 16, 2, 4
PINNING = "nothing pinned (every process may use both cores; each model runs 2 threads)"
METHOD = (
    f"{ROUNDS} interleaved rounds; sequential requests alternating smollm2 / "
    f"gemma3-270m, distinct prompts each request and round (so llama.cpp's "
    f"prefix cache does not answer them), temperature 0; direct = the "
    f"gateway's own two workers called on their ports; n_ctx 2048, "
    f"n_threads = n_threads_batch = {THREADS} everywhere"
)
COLUMNS = [
    "target",
    "total s",
    "total min-max",
    "per-request p50 s",
    "per-request max s",
    "completion tokens",
    "peer / this",
]


async def multimodel() -> Result:
    pin_self({0, 1})
    models = [gateway_model(SMOLLM, 1, THREADS), gateway_model(GEMMA, 1, THREADS)]
    servers = [server_model(SMOLLM, THREADS), server_model(GEMMA, THREADS)]
    gateway = start_gateway("multimodel", models, cpus=None)
    try:
        peer = start_llama_cpp_server("llama-server-multimodel", servers)
        try:
            workers = {w["model"]: str(w["url"]) for w in gateway_workers(gateway)}
            bases = {
                "direct": workers,
                "gateway": dict.fromkeys(workers, gateway.url),
                "llama_cpp.server": dict.fromkeys(workers, peer.url),
            }
            runs = await _rounds(bases)
        finally:
            peer.stop()
    finally:
        gateway.stop()
    return _result(runs)


async def _rounds(bases: dict[str, dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    names = list(bases)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(ROUNDS):
        for name in round_order(names, r):
            runs[name].append(await _alternate(bases[name], f"r{r}"))
    return runs


async def _alternate(base: dict[str, str], salt: str) -> dict[str, Any]:
    order = [SMOLLM[0], GEMMA[0]]
    answers: list[Answer] = []
    async with session() as http:
        for i in range(REQUESTS):
            model = order[i % 2]
            answers.append(await ask(http, base[model], model, prompt(i, salt), MAX_TOKENS))
    assert all(a.status == 200 for a in answers), [a.status for a in answers]
    latencies = [a.seconds for a in answers]
    return {
        "total": sum(latencies),
        "p50": percentile(latencies, 50),
        "max": max(latencies),
        "tokens": sum(a.completion_tokens for a in answers),
    }


def _result(runs: dict[str, list[dict[str, Any]]]) -> Result:
    title = f"4. Two real models, {REQUESTS} alternating requests (max_tokens {MAX_TOKENS})"
    res = Result("multimodel", title, PINNING, list(COLUMNS))
    totals = {n: spread([r["total"] for r in rs]) for n, rs in runs.items()}
    peer = totals["llama_cpp.server"]["median"]
    res.rows = [_row(name, totals[name], rs, peer) for name, rs in runs.items()]
    ratio = [g["total"] / d["total"] for g, d in zip(runs["gateway"], runs["direct"], strict=True)]
    over = spread(ratio)
    res.data = {
        "runs": runs,
        "gateway_over_direct": over,
        "peer_over_gateway": peer / totals["gateway"]["median"],
    }
    res.goal(
        "total within 5% of calling the two workers directly",
        f"gateway / direct = {over['median']:.3f} [{over['min']:.3f}-{over['max']:.3f}]",
        over["median"] <= 1.05,
    )
    res.notes.append(METHOD)
    return res


def _row(name: str, total: Spread, rounds: list[dict[str, Any]], peer: float) -> dict[str, Any]:
    """One target's totals over the rounds; `peer` is llama_cpp.server's median total."""
    return target_cells(name, total, "total s", "total min-max", 2) | {
        "per-request p50 s": spread([r["p50"] for r in rounds])["median"],
        "per-request max s": max(r["max"] for r in rounds),
        "completion tokens": rounds[-1]["tokens"],
        "peer / this": peer / total["median"],
        "total": total,
    }
