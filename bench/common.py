"""What every scenario shares: request bodies, targets, results files and tables."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loadgen import Target
from .procs import WORKER_SECRET
from .stats import Spread, min_max

__all__ = [
    "CHAT_PATH",
    "RESULTS",
    "Result",
    "chat_body",
    "fmt",
    "machine",
    "pin_self",
    "print_table",
    "round_order",
    "target",
    "target_cells",
]

RESULTS = Path(__file__).resolve().parent / "results"
CHAT_PATH = "/v1/chat/completions"


def chat_body(stream: bool = False, model: str = "mock", **extra: Any) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


# Sent to every target alike: workers require it, the gateway and the peers (no keys) ignore it.
AUTH = f"Authorization: Bearer {WORKER_SECRET}"


def target(url: str, body: bytes, path: str = CHAT_PATH, headers: tuple[str, ...] = ()) -> Target:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return Target(host, int(port), path, body, (AUTH, *headers))


def round_order(names: list[str], round_no: int) -> list[str]:
    """The targets in round `round_no`'s order: rotated by one each round, so each goes first
    in turn."""
    turn = round_no % len(names)
    return names[turn:] + names[:turn]


def pin_self(cpus: set[int]) -> None:
    """Pin the bench process (the load generator) to `cpus`."""
    os.sched_setaffinity(0, cpus)


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [
        ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")
    ]
    return {
        "cpu": models[0] if models else platform.processor(),
        "cores": os.cpu_count(),
        "uname": " ".join(platform.uname()),
        "python": platform.python_version(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


@dataclass
class Result:
    """One scenario's figures: a table, the goals it checks, and raw data for the plots."""

    name: str
    title: str
    pinning: str
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    def goal(self, text: str, figure: str, met: bool | None) -> None:
        self.goals.append({"goal": text, "figure": figure, "met": met})

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        doc = {**self.__dict__, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine()}
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        return path


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, bool):
        return "met" if value else "MISSED"
    return "-" if value is None else str(value)


def target_cells(
    name: str, figures: Spread, column: str, range_column: str, digits: int
) -> dict[str, Any]:
    """A row's first cells: the target, the median of its per-round figures and their min-max."""
    return {"target": name, column: figures["median"], range_column: min_max(figures, digits)}


def print_table(result: Result) -> None:
    cells = [[fmt(row.get(c)) for c in result.columns] for row in result.rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(result.columns)]
    print(f"\n== {result.title}  [{result.pinning}]")
    print("  ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for g in result.goals:
        print(f"goal: {g['goal']}: {g['figure']} -> {fmt(g['met'])}")
    for note in result.notes:
        print(f"note: {note}")
