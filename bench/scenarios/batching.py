"""Scenario 9: many clients on one model copy: slots (continuous batching) against replicas,
llama.cpp's own llama-server and llama-cpp-python's server, on SmolLM2 and Gemma 3 270M."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp

from ..common import Result, pin_self, round_order
from ..llm_client import Streamed, closed_streams
from ..peers import LLAMA_SERVER_BIN, start_llama_cpp_server, start_llama_server
from ..procs import ROOT, Proc, rss_kib, start_gateway
from ..stats import percentile
from .models import GEMMA, N_CTX, SMOLLM, gateway_model, server_model

__all__ = ["batching"]

CLIENTS, SECONDS, MAX_TOKENS, SLOTS = (1, 2, 4, 8), 10.0, 64, 8
PINNING = "nothing pinned; every target has 2 threads in all (ggml threads spin: never narrower)"
SLOTS_8, SLOTS_4X2, TODAY = (
    "(a) 1 x capacity 8, split KV",
    "(a') 2 x capacity 4",
    "(b) 2 x capacity 1",
)
UNIFIED = "(a) 1 x capacity 8, kv_unified"
LLAMA_SERVER, LLAMA_CPP_SERVER = "(c) llama-server -np 8", "(d) llama_cpp.server"
RAW = "(r) llama_decode alone, no HTTP"  # the ceiling: bench/raw_decode.py


async def batching() -> Result:
    pin_self({0, 1})
    res = Result("batching", "9. Continuous batching: aggregate tokens/s, TTFT and RSS",
                 PINNING, ["model", "target", "clients", "tokens/s", "ttft p50 ms",
                           "ttft p99 ms", "errors", "rss MiB"])  # fmt: skip
    for model in (SMOLLM, GEMMA):
        with contextlib.ExitStack() as stack:
            targets = {name: _enter(stack, make()) for name, make in _targets(model).items()}
            rows = await _measure(model, targets)
        res.rows += rows
    _verdict(res)
    return res


def _targets(model: tuple[str, Path]) -> dict[str, Callable[[], Proc]]:
    name = model[0]

    def gateway(
        replicas: int, capacity: int, threads: int, unified: bool = False
    ) -> Callable[[], Proc]:
        config = {**gateway_model(model, replicas, threads), "capacity": capacity}
        config["llama"] = {**config["llama"], "kv_unified": unified}
        label = f"batching-{name}-{replicas}x{capacity}{'-unified' if unified else ''}"
        return lambda: start_gateway(label, [config], None)

    targets = {SLOTS_8: gateway(1, SLOTS, 2, unified=False), UNIFIED: gateway(1, SLOTS, 2),
               SLOTS_4X2: gateway(2, SLOTS // 2, 1), TODAY: gateway(2, 1, 1)}  # fmt: skip
    if LLAMA_SERVER_BIN.exists():
        targets[LLAMA_SERVER] = lambda: start_llama_server(f"llama-server-{name}", model, SLOTS, 2)
    targets[LLAMA_CPP_SERVER] = lambda: start_llama_cpp_server(
        f"llama_cpp-server-{name}", [server_model(model, 2)]
    )
    return targets


def _enter(stack: contextlib.ExitStack, proc: Proc) -> Proc:
    stack.callback(proc.stop)
    return proc


async def _measure(model: tuple[str, Path], targets: dict[str, Proc]) -> list[dict[str, Any]]:
    """Each client count in turn, the targets and the raw ceiling interleaved (rotated)."""
    rows, name_ = [], model[0]
    for turn, clients in enumerate(CLIENTS):
        for name in round_order([*targets, RAW], turn):
            if name == RAW:
                rows.append(await _raw_row(model, clients))
                continue
            salt = f"{name_}{clients}{name[:4]}"
            answers, window = await closed_streams(
                targets[name].url, name_, clients, SECONDS, MAX_TOKENS, salt
            )
            rows.append(_row(name_, name, clients, answers, window, _tree_rss(targets[name].pid)))
    return rows


async def _raw_row(model: tuple[str, Path], clients: int) -> dict[str, Any]:
    """The same work on llama.cpp's batch API alone, one sequence per client (its own process)."""
    command = [sys.executable, "-m", "bench.raw_decode", str(model[1]), "--sequences",
               str(clients), "--seconds", str(SECONDS), "--max-tokens", str(MAX_TOKENS),
               "--threads", "2", "--n-ctx", str(N_CTX)]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=PIPE, stderr=DEVNULL)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.raw_decode failed (exit {proc.returncode})")
    measured = json.loads(out.decode().strip().splitlines()[-1])
    nan = float("nan")
    return {"model": model[0], "target": RAW, "clients": clients,
            "tokens/s": measured["tokens/s"], "ttft p50 ms": nan, "ttft p99 ms": nan,
            "errors": 0, "rss MiB": nan}  # fmt: skip


def _row(model: str, name: str, clients: int, answers: list[Streamed], window: float,
         rss_kib_: int) -> dict[str, Any]:  # fmt: skip
    served = [a for a in answers if a.status == 200]
    ttfts = [a.ttft for a in served if a.ttft > 0]
    return {"model": model, "target": name, "clients": clients,
            "tokens/s": sum(a.completion_tokens for a in served) / window,
            "ttft p50 ms": percentile(ttfts, 50) * 1e3, "ttft p99 ms": percentile(ttfts, 99) * 1e3,
            "errors": len(answers) - len(served), "rss MiB": rss_kib_ / 1024}  # fmt: skip


def _tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants (a gateway and its workers), in KiB."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        with contextlib.suppress(OSError):
            total += rss_kib(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
    return total


def _rate(res: Result, model: str, target: str, clients: int) -> float:
    found = [
        r for r in res.rows if (r["model"], r["target"], r["clients"]) == (model, target, clients)
    ]
    return float(found[0]["tokens/s"]) if found else float("nan")


def _ggml_version(folder: Path) -> str:
    """The ggml release a llama.cpp build in `folder` links (its library's file name)."""
    names = sorted(p.name for p in folder.glob("libggml-base.so.*.*.*"))
    return names[-1].removeprefix("libggml-base.so.") if names else "unknown"


def _verdict(res: Result) -> None:
    for model, wanted in ((SMOLLM[0], 1.8), (GEMMA[0], 2.5)):
        today = _rate(res, model, TODAY, 8)
        best = max(_rate(res, model, name, 8) for name in (SLOTS_8, UNIFIED, SLOTS_4X2))
        res.goal(f"{model}, 8 clients: slots >= {wanted}x (b) today's replicas",
                 f"{best / today:.2f}x", best / today >= wanted)  # fmt: skip
        peer = _rate(res, model, LLAMA_SERVER, 8)
        if peer == peer:  # measured (llama-server built: bench/setup_llama_server.sh)
            res.goal(f"{model}, 8 clients: slots >= 0.9x llama-server's tokens/s",
                     f"{best / peer:.2f}x", best / peer >= 0.9)  # fmt: skip
        raw = _rate(res, model, RAW, 8)
        alone = _rate(res, model, LLAMA_SERVER, 1) / _rate(res, model, RAW, 1)
        res.notes.append(
            f"{model}, 8 clients: the ceiling (r) is {raw / today:.2f}x (b); the slots reach "
            f"{best / raw:.2f}x of it, llama-server {peer / raw:.2f}x. At 1 client llama-server "
            f"decodes {alone:.2f}x as fast as (r): its own, newer llama.cpp (ggml "
            f"{_ggml_version(LLAMA_SERVER_BIN.parent)} against llama-cpp-python's "
            f"{_ggml_version(Path(llama_cpp.__file__).parent / 'lib')})."
        )
    res.notes.append(
        f"Closed loop: each client streams /v1/completions (max_tokens {MAX_TOKENS}, temperature "
        f"0, a distinct prompt each time) for {SECONDS:g} s per target and client count; "
        "tokens/s = completion tokens / window; TTFT = time to the first text; RSS = the "
        "target's process tree at the end of its run. Every target has 2 threads in all: "
        "(a) 1 replica x 8 slots x 2 threads (KV split per slot, or unified: the default), (a') "
        "and (b) 2 replicas x 1 thread, (c) and (d) 2."
    )
