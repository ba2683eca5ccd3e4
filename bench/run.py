"""`python -m bench.run [scenario ...]`: run scenarios, print their tables, write their JSON.

Scenarios (by name or number): 1 latency, 2 throughput, 3 streaming, 4 multimodel, 5 replicas,
6 peer, 7 footprint, 8 limits, 9 batching, 10 affinity, 11 on_demand. No argument runs them
all. Scenarios 1-3 include LiteLLM's proxy when bench/setup_litellm.sh has set it up (unless
--no-peer); scenario 6 divides our figures by its, from the latest results of 1-3 (the same run
under `make bench`).
Scenario 9 includes llama.cpp's llama-server when `make llama-server` has built it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from .common import RESULTS, Result, print_table
from .procs import COMMANDS, rss_kib
from .scenarios.affinity import affinity
from .scenarios.batching import batching
from .scenarios.footprint import footprint
from .scenarios.latency import latency
from .scenarios.limits import limits
from .scenarios.multimodel import multimodel
from .scenarios.on_demand import on_demand
from .scenarios.peer import peer
from .scenarios.replicas import replicas
from .scenarios.streaming import streaming
from .scenarios.throughput import throughput
from .stack import standin_stack

__all__ = ["SCENARIOS", "main"]

SCENARIOS = [
    "latency",
    "throughput",
    "streaming",
    "multimodel",
    "replicas",
    "peer",
    "footprint",
    "limits",
    "batching",
    "affinity",
    "on_demand",
]
STANDIN = {"token_delay": 0.0, "tokens": 200}
CAPACITY = 256  # one stand-in replica serving up to 256 requests at once


def _names(args: list[str]) -> list[str]:
    chosen = []
    for arg in args or SCENARIOS:
        name = SCENARIOS[int(arg) - 1] if arg.isdigit() else arg
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {arg!r}; known: {', '.join(SCENARIOS)}")
        chosen.append(name)
    return [n for n in SCENARIOS if n in chosen]


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _finish(result: Result, began: float, commands_from: int, load: str) -> None:
    result.commands = COMMANDS[commands_from:]
    result.data["seconds"] = round(time.monotonic() - began, 1)
    result.data["loadavg"] = [load, _loadavg()]
    print_table(result)
    print(f"-> {result.save().relative_to(RESULTS.parent.parent)}", flush=True)


async def _standin_part(names: list[str], with_peer: bool) -> None:
    """Scenarios 1 and 2 share one gateway (1 stand-in replica of capacity 256) and LiteLLM."""
    began, mark, load = time.monotonic(), len(COMMANDS), _loadavg()
    bare = "latency" in names  # the cost of metrics and the request log, beside the gateway
    with standin_stack("standin", STANDIN, 1, with_peer, capacity=CAPACITY, bare=bare) as stack:
        if "latency" in names:
            _finish(await latency(stack), began, mark, load)
        if "throughput" in names:
            began, load = time.monotonic(), _loadavg()
            result = await throughput(stack)
            result.data["gateway_rss_kib"] = {
                "idle": stack.idle_rss_kib,
                "after": rss_kib(stack.gateway.pid),
            }
            result.data["worker_rss_kib"] = stack.worker_rss_kib()
            _finish(result, began, mark, load)


Step = Callable[[bool], Awaitable[Result]]
_STEPS: dict[str, Step] = {
    "streaming": streaming,
    "multimodel": lambda _: multimodel(),
    "replicas": lambda _: replicas(),
    "peer": lambda _: peer(),
    "footprint": lambda _: footprint(),
    "limits": lambda _: limits(),
    "batching": lambda _: batching(),
    "affinity": lambda _: affinity(),
    "on_demand": lambda _: on_demand(),
}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenarios", nargs="*", help="names or numbers (default: all)")
    parser.add_argument("--no-peer", action="store_true", help="leave LiteLLM out of 1-3")
    options = parser.parse_args(argv)
    names = _names(options.scenarios)
    with_peer = not options.no_peer
    print(f"scenarios: {', '.join(names)}", flush=True)
    failed: list[str] = []
    if {"latency", "throughput"} & set(names):
        await _standin_part(names, with_peer)
    for name in names:
        if name in _STEPS:
            began, mark, load = time.monotonic(), len(COMMANDS), _loadavg()
            try:
                result = await _STEPS[name](with_peer)
            except Exception:  # one broken scenario must not lose the others' figures
                traceback.print_exc()
                failed.append(name)
                continue
            _finish(result, began, mark, load)
    (RESULTS / "run.json").write_text(json.dumps({"argv": sys.argv, "scenarios": names}) + "\n")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
