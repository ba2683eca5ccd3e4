"""Gateway CPU per request, A/B between source trees, alternating (the machine is noisy).

    git worktree add /tmp/old <commit>
    .venv/bin/python bench/ab_cpu.py /tmp/old . [--runs 3]

Each run starts the stand-in stack of scenario 2 from one tree (its gateway, its workers, its
bench code), drives a closed loop of 32 connections for 2 s twice, and prints the gateway's CPU
microseconds per answered request of the second: lower is cheaper.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys


async def _measure() -> str:
    sys.path.insert(0, os.getcwd())  # this tree's bench, gateway and workers
    from bench.common import chat_body, target
    from bench.run import STANDIN
    from bench.scenarios.throughput import _ceiling_run
    from bench.stack import standin_stack

    with standin_stack("ab-cpu", STANDIN, 1, False, capacity=256) as stack:
        targets = [target(url, chat_body()) for url in stack.urls()["gateway"]]
        workers = [int(w["pid"]) for w in stack.workers]
        for _ in range(2):  # the first warms up
            figures = await _ceiling_run("gateway", targets, stack.gateway, workers)
    return f"gateway_us={figures['proxy_us']:.0f} req_s={figures['req_s']:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", help="source trees to compare, in turn")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(asyncio.run(_measure()))
        return 0
    for run in range(args.runs):
        for tree in args.trees:
            command = [sys.executable, os.path.abspath(__file__), "--measure"]
            result = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True)
            print(f"run {run + 1} {tree}: {result.stdout.strip().splitlines()[-1]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
