"""PNG plots for BENCHMARKS.md: added-latency distribution, throughput vs offered rate,
tokens/s vs replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["PLOTS", "latency_plot", "replicas_plot", "throughput_plot"]

PLOTS = Path(__file__).resolve().parent / "plots"


def _save(fig: Figure, name: str) -> Path:
    PLOTS.mkdir(exist_ok=True)
    path = PLOTS / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(ax: Axes, title: str, xlabel: str, ylabel: str, **scales: str) -> None:
    """A panel's title and axis labels, and any axis scales (xscale="log", ...)."""
    ax.set(**scales, xlabel=xlabel, ylabel=ylabel, title=title)


def _save_pair(fig: Figure, axes: tuple[Axes, Axes], name: str) -> Path:
    """Save a two-panel figure, each panel with a light grid and its legend."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, name)


def latency_plot(doc: dict[str, Any]) -> Path:
    """Latency quantiles per target (log x), and the added latency at each quantile."""
    data = doc["data"]
    qs = [q / 2 for q in range(201)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("direct", "gateway", "litellm"):
        if name in data:
            left.plot(data[name], qs, label=name)
            if name != "direct":
                added = [a - d for a, d in zip(data[name], data["direct"], strict=True)]
                right.plot(qs[:199], added[:199], label=f"{name} - direct")
    _label(left, "Concurrency 1: latency distribution", "latency (ms)", "percentile", xscale="log")
    title = "Added latency by percentile (to p99.5)"
    _label(right, title, "percentile", "added latency (ms)", yscale="symlog")
    return _save_pair(fig, (left, right), "latency.png")


def throughput_plot(doc: dict[str, Any]) -> Path:
    steps = doc["data"]["steps"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({n for s in steps for n in s["targets"]})
    for name in names:
        pts = [(s["rate"], s["targets"][name]) for s in steps if name in s["targets"]]
        left.plot([r for r, _ in pts], [f["achieved"] for _, f in pts], marker="o", label=name)
        right.plot([r for r, _ in pts], [f["p99"] for _, f in pts], marker="o", label=name)
    top = max(s["rate"] for s in steps)
    left.plot([0, top], [0, top], "k:", linewidth=0.8, label="offered")
    rate = "offered rate (req/s)"
    _label(left, "Throughput against offered rate", rate, "answered (req/s)")
    _label(right, "p99 latency (from scheduled send)", rate, "p99 latency (ms)", yscale="log")
    return _save_pair(fig, (left, right), "throughput.png")


def replicas_plot(doc: dict[str, Any]) -> Path:
    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [r["target"].replace(", ", "\n") for r in rows]
    values = [r["tokens/s"] for r in rows]
    lows = [v - r["tokens_per_s"]["min"] for v, r in zip(values, rows, strict=True)]
    highs = [r["tokens_per_s"]["max"] - v for v, r in zip(values, rows, strict=True)]
    ax.bar(labels, values, yerr=[lows, highs], capsize=4, color=["C0", "C1", "C2"])
    ax.set(ylabel="completion tokens/s", title="SmolLM2, 8 clients: tokens/s against replicas")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, "replicas.png")
