"""Scenario 9: one model copy serving 1, 8 and 32 clients: our engine loop through the gateway
against llama.cpp's own llama-server (direct, and behind the gateway), on SmolLM2 and Gemma 3
270M, with the raw `llama_decode` ceiling and our engine alone in-process beside them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp

from ..common import Result, pin_self, round_order
from ..llm_client import Arrivals, steady_streams
from ..peers import LLAMA_SERVER_BIN, LLAMA_SERVER_SAME_BIN, start_llama_server
from ..procs import ROOT, Proc, rss_kib, start_gateway
from ..stats import percentile
from .models import GEMMA, SMOLLM

__all__ = ["batching"]

CLIENTS, WARMUP, SECONDS, MAX_TOKENS, N_CTX, THREADS = (1, 8, 32), 3.0, 12.0, 64, 1024, 2
# A part of the scenario, e.g. BENCH_BATCHING="smollm2:8,32" (the goals of what ran are judged).
_PART = os.environ.get("BENCH_BATCHING", "")
ROUNDS = 2  # each target measured twice per client count, in rotated order; medians shown
PINNING = "nothing pinned; every target has 2 threads in all (ggml threads spin: never narrower)"
OURS, PEER, PEER_BEHIND = (
    "(a) our engine, 1 x capacity N, via gateway",
    "(c) llama-server -np N, direct",
    "(c') llama-server -np N, via gateway",
)
SAME = "(c0) llama-server -np N, our llama.cpp, direct"
ENGINE = "(d) engine: llama-server, 1 x capacity N, via gateway"
ALONE, RAW = "(e) our engine alone, in-process", "(r) llama_decode alone, no HTTP"


async def batching() -> Result:
    pin_self({0, 1})
    res = Result(
        "batching",
        "9. One model copy: aggregate tokens/s, TTFT and RSS",
        PINNING,
        [
            "model",
            "target",
            "clients",
            "tokens/s",
            "rounds",
            "ttft p50 ms",
            "ttft p99 ms",
            "errors",
            "rss MiB",
        ],
    )
    for model in _models():
        for turn, clients in enumerate(_client_counts()):
            with contextlib.ExitStack() as stack:
                targets = {
                    name: _enter(stack, make()) for name, make in _targets(model, clients).items()
                }
                rounds = [await _measure(model, clients, turn + r, targets) for r in range(ROUNDS)]
                res.rows += _combined(rounds)
    _verdict(res)
    return res


def _combined(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each target's rows of the rounds as one: the medians, and each round's tokens/s."""
    rows = []
    for target in sorted({row["target"] for row in rounds[0]}):
        mine = [row for one in rounds for row in one if row["target"] == target]
        row = {**mine[0], "rounds": " / ".join(f"{r['tokens/s']:.0f}" for r in mine)}
        for column in ("tokens/s", "ttft p50 ms", "ttft p99 ms", "rss MiB"):
            row[column] = statistics.median(r[column] for r in mine)
        row["errors"] = sum(r["errors"] for r in mine)
        rows.append(row)
    return rows


def _model(
    model: tuple[str, Path], slots: int, upstream: str | None = None, engine: str = "llama"
) -> dict[str, Any]:
    name, path = model
    entry: dict[str, Any] = {"name": name, "max_queue": 1000, "queue_timeout": 300}
    if upstream is not None:
        return {**entry, "upstreams": [{"url": upstream, "capacity": slots}]}
    llama = {"n_ctx": N_CTX, "n_threads": THREADS, "n_threads_batch": THREADS}
    return {
        **entry,
        "path": str(path),
        "replicas": 1,
        "capacity": slots,
        "llama": llama,
        "engine": engine,
    }


def _targets(model: tuple[str, Path], slots: int) -> dict[str, Callable[[], Proc]]:
    name = model[0]
    targets = {OURS: lambda: start_gateway(f"engine-{name}-{slots}", [_model(model, slots)], None)}
    if LLAMA_SERVER_SAME_BIN.exists():  # bench/setup_llama_server_same.sh builds it
        same = f"llama-server-same-{name}-{slots}"
        targets[SAME] = lambda: start_llama_server(
            same, model, slots, THREADS, N_CTX, LLAMA_SERVER_SAME_BIN
        )
    if not LLAMA_SERVER_BIN.exists():  # bench/setup_llama_server.sh builds it
        return targets
    peer: list[Proc] = []

    def server() -> Proc:
        peer.append(
            start_llama_server(f"llama-server-{name}-{slots}", model, slots, THREADS, N_CTX)
        )
        return peer[0]

    def behind() -> Proc:
        upstream = _model(model, slots, peer[0].url + "/v1")
        return start_gateway(f"engine-peer-{name}-{slots}", [upstream], None)

    def supervised() -> Proc:  # the gateway starts llama-server itself (`engine: llama-server`)
        entry = _model(model, slots, engine="llama-server")
        return start_gateway(f"engine-llama-server-{name}-{slots}", [entry], None)

    return {**targets, PEER: server, PEER_BEHIND: behind, ENGINE: supervised}


def _enter(stack: contextlib.ExitStack, proc: Proc) -> Proc:
    stack.callback(proc.stop)
    return proc


async def _measure(
    model: tuple[str, Path], clients: int, turn: int, targets: dict[str, Proc]
) -> list[dict[str, Any]]:
    """One client count: the targets and the in-process runs interleaved (rotated)."""
    rows, name_ = [], model[0]
    for name in round_order([*targets, ALONE, RAW], turn):
        if name in (ALONE, RAW):
            rows.append(await _in_process_row(model, clients, name))
            continue
        # A prompt never repeats, in any round: llama-server's prompt cache would otherwise
        # serve a whole prompt seen in the last round from memory (less work, not equal work).
        salt = f"{name_}{clients}{name[:4]}{turn}"
        answers, start, end = await steady_streams(
            targets[name].url, name_, clients, WARMUP, SECONDS, MAX_TOKENS, salt
        )
        rss = _tree_rss(targets[name].pid)
        if name == PEER_BEHIND:  # the gateway and the llama-server behind it
            rss += _tree_rss(targets[PEER].pid)
        rows.append(_row(name_, name, clients, answers, (start, end), rss))
    return rows


async def _in_process_row(model: tuple[str, Path], clients: int, name: str) -> dict[str, Any]:
    """The same work without HTTP, one sequence per client, in a process of its own."""
    module = "bench.engine_alone" if name == ALONE else "bench.raw_decode"
    command = [
        sys.executable,
        "-m",
        module,
        str(model[1]),
        "--sequences",
        str(clients),
        "--seconds",
        str(SECONDS),
        "--max-tokens",
        str(MAX_TOKENS),
        "--threads",
        str(THREADS),
        "--n-ctx",
        str(N_CTX),
    ]
    if name == RAW:  # the engine's own settings: KV split per slot, flash attention
        command += ["--split", "--flash-attn"]
    proc = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=PIPE, stderr=DEVNULL)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed (exit {proc.returncode})")
    measured = json.loads(out.decode().strip().splitlines()[-1])
    nan = float("nan")
    return {
        "model": model[0],
        "target": name,
        "clients": clients,
        "tokens/s": measured["tokens/s"],
        "ttft p50 ms": nan,
        "ttft p99 ms": nan,
        "errors": 0,
        "rss MiB": nan,
    }


def _row(
    model: str,
    name: str,
    clients: int,
    answers: list[Arrivals],
    window: tuple[float, float],
    rss_kib_: int,
) -> dict[str, Any]:
    """The steady state: tokens that arrived in the window, TTFTs of answers begun in it."""
    start, end = window
    tokens = sum(start <= t < end for answer in answers for t in answer.times)
    ttfts = [a.ttft for a in answers if start <= a.began < end and a.ttft is not None]
    errors = sum(a.status >= 400 for a in answers)
    return {
        "model": model,
        "target": name,
        "clients": clients,
        "tokens/s": tokens / (end - start),
        "ttft p50 ms": percentile(ttfts, 50) * 1e3,
        "ttft p99 ms": percentile(ttfts, 99) * 1e3,
        "errors": errors,
        "rss MiB": rss_kib_ / 1024,
    }


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


def _figure(res: Result, model: str, target: str, clients: int, column: str) -> float:
    found = [
        r for r in res.rows if (r["model"], r["target"], r["clients"]) == (model, target, clients)
    ]
    return float(found[0][column]) if found else float("nan")


def _ggml_version(folder: Path) -> str:
    """The ggml release a llama.cpp build in `folder` links (its library's file name)."""
    names = sorted(p.name for p in folder.glob("libggml-base.so.*.*.*"))
    return names[-1].removeprefix("libggml-base.so.") if names else "unknown"


def _ratio_goal(
    res: Result,
    model: str,
    clients: int,
    column: str,
    target: float,
    most: bool = False,
    ours: str = OURS,
) -> None:
    mine, peer = (_figure(res, model, t, clients, column) for t in (ours, PEER))
    ratio = mine / peer
    wanted = f"<= {target}x" if most else f">= {target}x"
    met = ratio <= target if most else ratio >= target
    which = "" if ours == OURS else "engine: llama-server: "
    res.goal(
        f"{model}, {clients} clients: {which}{column} {wanted} llama-server direct",
        f"{ratio:.2f}x",
        met if ratio == ratio else None,
    )


def _same_version_note(res: Result, model: str) -> None:
    if not any(row["target"] == SAME for row in res.rows):
        return  # bench/setup_llama_server_same.sh has not built it here
    counts = _client_counts()
    ratios = [
        _figure(res, model, OURS, n, "tokens/s") / _figure(res, model, SAME, n, "tokens/s")
        for n in counts
    ]
    res.notes.append(
        f"{model}: our engine against llama-server built from the same llama.cpp "
        f"(c0), tokens/s at {', '.join(map(str, counts))} clients: "
        f"{', '.join(f'{r:.2f}x' for r in ratios)}."
    )


def _models() -> tuple[tuple[str, Path], ...]:
    name = _PART.partition(":")[0]
    return tuple(m for m in (SMOLLM, GEMMA) if not name or m[0] == name)


def _client_counts() -> tuple[int, ...]:
    counts = _PART.partition(":")[2]
    return tuple(int(n) for n in counts.split(",")) if counts else CLIENTS


def _verdict(res: Result) -> None:
    counts = _client_counts()
    for model in (m[0] for m in _models()):
        _same_version_note(res, model)
        for clients in counts:
            _ratio_goal(res, model, clients, "tokens/s", 0.9)
        for clients in (n for n in counts if n in (8, 32)):
            _ratio_goal(res, model, clients, "tokens/s", 0.93, ours=ENGINE)
        if 8 in counts:
            _ratio_goal(res, model, 8, "ttft p50 ms", 1.2, most=True)
        errors = sum(int(r["errors"]) for r in res.rows if r["model"] == model)
        res.goal(f"{model}: no errors at any client count", str(errors), errors == 0)
        for clients in counts:
            alone, raw = (_figure(res, model, t, clients, "tokens/s") for t in (ALONE, RAW))
            res.goal(
                f"{model}, {clients} clients: engine alone >= 0.95x the raw ceiling",
                f"{alone / raw:.2f}x",
                alone / raw >= 0.95,
            )
    res.notes.append(
        f"Closed loop: each client streams /v1/completions (max_tokens {MAX_TOKENS}, temperature "
        f"0, ignore_eos: every answer is {MAX_TOKENS} tokens, a distinct prompt each time); per "
        f"target and client count N, {WARMUP:g} s of warm-up then a {SECONDS:g} s window: "
        "tokens/s = text pieces (one token each) that arrived in the window / its length, "
        "TTFT = time to the first text of the answers begun in it (the steady state: no ramp-up, "
        "no drain); RSS = the target's process tree at the end of its run "
        f"(for (c') the gateway plus the llama-server behind it). Every target: one model copy, "
        f"N slots of {N_CTX} tokens, {THREADS} threads, flash attention auto. (e) and (r) run "
        "the same work in-process: (e) our engine loop through each slot's completion path, "
        "(r) llama_decode and an argmax alone (bench/raw_decode.py). llama-server's llama.cpp "
        f"links ggml {_ggml_version(LLAMA_SERVER_BIN.resolve().parent)}, llama-cpp-python's "
        f"{_ggml_version(Path(llama_cpp.__file__).parent / 'lib')}."
    )
