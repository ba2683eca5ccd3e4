"""`python -m bench.profile [--stream]`: py-spy the gateway under load; print its hot spots.

Starts the stand-in stack of scenario 2 (gateway on core 0, workers and this load generator on
core 1; one stand-in replica of high capacity), records the gateway with `py-spy record --format
raw` for SECONDS while a closed loop keeps it busy, then prints the leaf functions and the
gateway/ functions (inclusive) by share of samples. Writes bench/results/profile[-stream].txt
and the raw stacks next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

import uvloop

from .common import RESULTS, chat_body, target
from .loadgen import closed_loop
from .scenarios.streaming import STREAM
from .stack import standin_stack

__all__ = ["hot_spots", "main"]

SECONDS, RATE = 8, 250
CONNS, STREAMS = 32, 256  # closed-loop connections: JSON requests, or concurrent SSE streams
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for root in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if root in file:
            file = file.split(root, 1)[1]
    return f"{file}:{match['func']}"


def hot_spots(raw: str, top: int = 25) -> str:
    """Leaf (self) shares and gateway/ inclusive shares from py-spy's collapsed stacks."""
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        total += count
        leaf[frames[-1]] += count
        for name in set(frames):
            if name.startswith("gateway/"):
                inclusive[name] += count
    lines = [f"{total} samples", "", "self time (leaf frames):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in leaf.most_common(top)]
    lines += ["", "gateway/ functions, inclusive:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def _load(url: str, stream: bool) -> None:
    body = chat_body(stream=stream)
    conns = STREAMS if stream else CONNS
    await closed_loop(target(url, body), conns, duration=SECONDS + 2, sse=stream)


async def profile(stream: bool) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    suffix = "-stream" if stream else ""
    raw_path = RESULTS / f"profile{suffix}.raw"
    # as scenarios 2 and 3: one stand-in replica with capacity enough for every connection
    options = (STREAM, 512) if stream else ({"token_delay": 0.0, "tokens": 200}, 256)
    with standin_stack(f"profile{suffix}", options[0], 1, False, capacity=options[1]) as stack:
        spy_cmd = [
            spy,
            "record",
            "--pid",
            str(stack.gateway.pid),
            "--duration",
            str(SECONDS),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--output",
            str(raw_path),
            "--nonblocking",
        ]
        load = asyncio.ensure_future(_load(stack.gateway.url, stream))
        await asyncio.sleep(1)
        spy_proc = await asyncio.create_subprocess_exec(*spy_cmd, stdout=subprocess.DEVNULL)
        await spy_proc.wait()
        await load
    report = hot_spots(raw_path.read_text())
    (RESULTS / f"profile{suffix}.txt").write_text(" ".join(spy_cmd) + "\n\n" + report + "\n")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument(
        "--stream", action="store_true", help=f"{STREAMS} SSE streams instead of JSON"
    )
    options = parser.parse_args()
    print(uvloop.run(profile(options.stream)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
