"""A worker started ahead of need (`python -m workers --standby`): it imports what every worker
imports (aiohttp, llama-cpp-python: half a second of a worker's start), then waits for its
arguments, one JSON line on stdin: {"argv": [...], "env": {...}}. The gateway keeps one ready
for replicas loaded on demand, so their load starts at the model, not at the interpreter.
Nothing here touches a GPU: a standby serves CPU replicas only (CUDA_VISIBLE_DEVICES is set
before CUDA could start, at the model's load, but the gateway does not rely on it)."""

from __future__ import annotations

import json
import os
import sys

__all__ = ["main"]


def main() -> int:
    import llama_cpp  # noqa: F401  (the slow import, done while nobody waits)

    from workers.cli import main as worker_main

    line = sys.stdin.readline()
    if not line:  # the gateway closed our stdin (or died): not needed
        return 0
    order = json.loads(line)
    os.environ.update(order["env"])
    code: int = worker_main(order["argv"])
    return code
