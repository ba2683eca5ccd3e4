"""Scenario 5: SmolLM2 with 8 concurrent clients: 1 replica vs 2 vs llama-cpp-python's server."""

from __future__ import annotations

import contextlib
from typing import Any

from ..common import Result, pin_self, round_order, target_cells
from ..llm_client import closed_clients
from ..peers import start_llama_cpp_server
from ..procs import Proc, start_gateway
from ..stats import Spread, spread
from .models import SMOLLM, gateway_model, server_model

__all__ = ["CLIENTS", "replicas"]

CLIENTS, SECONDS, MAX_TOKENS, ROUNDS = 8, 10.0, 32, 2
PINNING = "nothing pinned (never narrower than a worker's threads: ggml threads spin)"


async def replicas() -> Result:
    pin_self({0, 1})
    with contextlib.ExitStack() as stack:
        one = _enter(stack, start_gateway("replicas-1", [gateway_model(SMOLLM, 1, 2)], None))
        two = _enter(stack, start_gateway("replicas-2", [gateway_model(SMOLLM, 2, 1)], None))
        peer = _enter(
            stack, start_llama_cpp_server("llama-server-smollm2", [server_model(SMOLLM, 2)])
        )
        bases = {
            "gateway, 1 replica x 2 threads": one.url,
            "gateway, 2 replicas x 1 thread": two.url,
            "llama_cpp.server, 2 threads": peer.url,
        }
        runs = await _rounds(bases)
    return _result(runs)


def _enter(stack: contextlib.ExitStack, proc: Proc) -> Proc:
    stack.callback(proc.stop)
    return proc


async def _rounds(bases: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    names = list(bases)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(ROUNDS):
        for name in round_order(names, r):
            answers, window = await closed_clients(
                bases[name], SMOLLM[0], CLIENTS, SECONDS, MAX_TOKENS, f"{r}{name[:3]}"
            )
            errors = sum(a.status != 200 for a in answers)
            tokens = sum(a.completion_tokens for a in answers)
            runs[name].append(
                {
                    "tokens_per_s": tokens / window,
                    "requests": len(answers),
                    "errors": errors,
                    "window": window,
                }
            )
    return runs


def _result(runs: dict[str, list[dict[str, Any]]]) -> Result:
    res = Result(
        "replicas",
        f"5. Replica scaling: SmolLM2, {CLIENTS} concurrent clients",
        PINNING,
        ["target", "tokens/s", "min-max", "requests", "errors", "vs peer"],
    )
    rates = {n: spread([r["tokens_per_s"] for r in rs]) for n, rs in runs.items()}
    one, two, peer = (rates[name]["median"] for name in runs)
    res.rows = [_row(name, rates[name], rs, peer) for name, rs in runs.items()]
    res.data = {
        "runs": runs,
        "two_vs_peer": two / peer,
        "two_vs_one": two / one,
        "replicas": {1: one, 2: two},
        "peer": peer,
    }
    res.goal(
        "2 replicas >= 2.5x llama_cpp.server's tokens/s", f"{two / peer:.2f}x", two / peer >= 2.5
    )
    res.notes.append(
        f"{ROUNDS} interleaved rounds of {SECONDS:g} s per target, closed loop, "
        f"max_tokens {MAX_TOKENS}, temperature 0, distinct prompts; tokens/s = "
        f"completion tokens / (last answer - start); 2 replicas / 1 replica = "
        f"{two / one:.2f}x"
    )
    return res


def _row(name: str, rate: Spread, rounds: list[dict[str, Any]], peer: float) -> dict[str, Any]:
    """One target's tokens/s over the rounds against `peer`, llama_cpp.server's median."""
    return target_cells(name, rate, "tokens/s", "min-max", 1) | {
        "requests": sum(x["requests"] for x in rounds),
        "errors": sum(x["errors"] for x in rounds),
        "vs peer": rate["median"] / peer,
        "tokens_per_s": rate,
    }
