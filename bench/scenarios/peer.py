"""Scenario 6: our figures divided by LiteLLM's, from scenarios 1-3 of this same run."""

from __future__ import annotations

import json
from typing import Any

from ..common import RESULTS, Result

__all__ = ["peer"]


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return doc


def _row(rows: list[dict[str, Any]], target: str, **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if row["target"] == target and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


async def peer() -> Result:
    res = Result(
        "peer",
        "6. Peer gateway: LiteLLM proxy vs ours, same stand-in, same cores",
        "as scenarios 1-3",
        ["figure", "ours", "LiteLLM", "LiteLLM / ours"],
    )
    lat, thr, stream = _load("latency"), _load("throughput"), _load("streaming")
    if _row(lat["rows"], "litellm") is None:
        res.notes.append("LiteLLM was not part of scenarios 1-3 (bench/setup_litellm.sh not run)")
        return res
    _add_latency(res, lat)
    _add_throughput(res, thr)
    _add_streaming(res, stream)
    _throughput_goal(res, thr["data"]["held"])
    _notes(res, lat, thr, stream)
    return res


def _add_latency(res: Result, lat: dict[str, Any]) -> None:
    ours, theirs = _row(lat["rows"], "gateway"), _row(lat["rows"], "litellm")
    assert ours and theirs
    for key in ("added p50", "added p99"):
        _add(res, f"1. {key} latency (ms)", ours[key], theirs[key])


def _add_throughput(res: Result, thr: dict[str, Any]) -> None:
    held = thr["data"]["held"]
    _add(res, "2. highest rate held (req/s)", held["gateway"], held.get("litellm", 0))
    gw_cpu, lite_cpu = _cpu(thr, "gateway"), _cpu(thr, "litellm")
    _add(res, "2. proxy CPU per request (us, lowest rate)", gw_cpu, lite_cpu)


def _add_streaming(res: Result, stream: dict[str, Any]) -> None:
    """The added ttft p50 and gap p99 at every stream count both gateways were tested at."""
    for streams in sorted({r["streams"] for r in stream["rows"]}):
        ours = _row(stream["rows"], "gateway", streams=streams)
        lite = _row(stream["rows"], "litellm", streams=streams)
        if ours and lite:
            for key in ("added ttft p50", "added gap p99"):
                _add(res, f"3. {key} (ms), {streams} streams", ours[key], lite[key])


def _throughput_goal(res: Result, held: dict[str, int]) -> None:
    if held.get("litellm"):
        ratio = held["gateway"] / held["litellm"]
        res.goal("throughput at least 5x LiteLLM's", f"{ratio:.1f}x", ratio >= 5)
    else:
        res.goal("throughput at least 5x LiteLLM's", "LiteLLM held no rate tested", None)


def _notes(res: Result, lat: dict[str, Any], thr: dict[str, Any], stream: dict[str, Any]) -> None:
    dates = {n: d["date"] for n, d in (("1", lat), ("2", thr), ("3", stream))}
    res.notes.append(f"from the results of scenarios 1-3 dated {dates}")
    res.notes.append(
        "ratios are LiteLLM's figure over ours: above 1 means ours is better for "
        "latencies and CPU, below 1 for the held rate"
    )
    res.notes.append(
        f"LiteLLM: {lat['data'].get('litellm_version', 'litellm 1.110.2')}, "
        "--num_workers 1, least-busy routing over the same stand-in workers"
    )


def _cpu(thr: dict[str, Any], target: str) -> float | None:
    for step in thr["data"]["steps"]:
        fig = step["targets"].get(target)
        if fig and fig.get("cpu_us_per_req"):
            return float(fig["cpu_us_per_req"])
    return None


def _add(res: Result, figure: str, ours: Any, theirs: Any) -> None:
    ratio = theirs / ours if isinstance(ours, int | float) and ours and theirs is not None else None
    res.rows.append({"figure": figure, "ours": ours, "LiteLLM": theirs, "LiteLLM / ours": ratio})
