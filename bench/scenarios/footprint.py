"""Scenario 7: the gateway's memory (idle, after scenario 2) and start-up time to /ready."""

from __future__ import annotations

import json
from typing import Any

from ..common import RESULTS, Result, pin_self
from ..procs import ROOT, free_port, gateway_workers, rss_kib, start, wait_http
from ..stats import min_max, spread

__all__ = ["footprint"]

STARTS = 3


def _startup(i: int) -> dict[str, Any]:
    """Start the shipped config.yaml (unpinned); time to /ready 200; RSS once ready."""
    port = free_port()
    argv = [
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        "gateway",
        "serve",
        "--config",
        "config.yaml",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = start(f"footprint-{i}", argv, port)
    try:
        seconds = wait_http(proc, "/ready", 300)
        workers = [rss_kib(int(w["pid"])) for w in gateway_workers(proc)]
        return {"seconds": seconds, "gateway_kib": rss_kib(proc.pid), "workers_kib": workers}
    finally:
        proc.stop()


async def footprint() -> Result:
    pin_self({0, 1})
    starts = [_startup(i) for i in range(STARTS)]
    res = Result(
        "footprint", "7. Footprint", "none (start-up: unpinned)", ["figure", "value", "min-max"]
    )
    res.rows = _startup_rows(starts) + _throughput_rows()
    res.data = {"starts": starts}
    res.notes.append(
        f"{STARTS} starts of `serve --config config.yaml` (4 llama workers: smollm2 x2, "
        "gemma3-270m, smollm2-embed); RSS = VmRSS of the gateway process alone, "
        "workers separately; scenario 2 figures from bench/results/throughput.json"
    )
    return res


def _startup_rows(starts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time to /ready over every start; the gateway's and its workers' RSS at the last."""
    ready = spread([s["seconds"] for s in starts])
    last = starts[-1]
    return [
        {
            "figure": "config.yaml: serve start -> /ready 200 (s)",
            "value": ready["median"],
            "min-max": min_max(ready, 2),
        },
        {
            "figure": "config.yaml: gateway RSS once ready (MiB)",
            "value": last["gateway_kib"] / 1024,
        },
        {
            "figure": f"config.yaml: {len(last['workers_kib'])} llama workers' RSS (MiB)",
            "value": sum(last["workers_kib"]) / 1024,
            "min-max": " / ".join(f"{k / 1024:.0f}" for k in last["workers_kib"]),
        },
    ]


def _throughput_rows() -> list[dict[str, Any]]:
    """The stand-in stack's memory around scenario 2, from its results (none without them)."""
    thr = RESULTS / "throughput.json"
    if not thr.exists():
        return []
    data = json.loads(thr.read_text())["data"]
    rss = data.get("gateway_rss_kib", {})
    return [
        {"figure": "stand-in gateway RSS idle (MiB)", "value": rss["idle"] / 1024},
        {"figure": "stand-in gateway RSS after scenario 2 (MiB)", "value": rss["after"] / 1024},
        {
            "figure": f"its {len(data['worker_rss_kib'])} stand-in worker(s)' RSS "
            "after scenario 2 (MiB)",
            "value": sum(data["worker_rss_kib"]) / 1024,
        },
    ]
