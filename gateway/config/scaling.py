"""The on-demand part of config.yaml: replica ranges, memory sizes and budgets, scaling settings.

memory:                          # budget per device; omitted: read from the machine
  cpu: 16GiB
  "0": 24GiB
scaling:
  min_residency: 5               # seconds a replica is kept before it may be evicted
models:
  - replicas: {min: 0, max: 2}   # or a plain number: a fixed pool
    idle_ttl: 600
    scale_up_queue: 2
    gpus: auto
    memory: 3GiB                 # a replica's need, where the GGUF estimate is not wanted
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .checks import ConfigError, checked, is_int, mapping, non_neg_num, reject_unknown, shown
from .fields import keys

__all__ = [
    "ReplicaRange",
    "ScalingConfig",
    "parse_budgets",
    "parse_replica_range",
    "parse_scaling",
    "parse_size",
    "show_size",
]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
SIZE_HELP = "a size like 512MiB, 16GiB or 24GB, or a number of bytes"


@dataclass(frozen=True)
class ReplicaRange:
    """How many local replicas a model runs: `min` always, up to `max` on demand."""

    min: int
    max: int


@dataclass(frozen=True)
class ScalingConfig:
    # A replica loaded this recently is not evicted: under mixed traffic for more models than
    # fit, swapping on every request would spend all the time loading (llama-swap issue 612).
    # None ("auto"): as long as the replica took to load, so a swap wastes at most half the
    # time (the ski-rental bound), and a model that loads in a second is not held for five.
    min_residency: float | None = None
    # A worker process started ahead of need for the next CPU replica (its imports done): half a
    # second off each load, for ~0.6 CPU-seconds of imports taken from whatever else runs. None
    # ("auto"): only with more than 4 CPUs, where those seconds are spare.
    spare_worker: bool | None = None

    def keeps_spare(self, cpus: int | None) -> bool:
        return self.spare_worker if self.spare_worker is not None else (cpus or 1) > 4


def parse_size(value: Any, where: str) -> int:
    """Bytes from `value`: an integer, or a number with a unit (KiB..TiB, KB..TB)."""
    if is_int(value) and value >= 0:
        return int(value)
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ConfigError(f"{where}: expected {SIZE_HELP}, got {shown(value)}")
    return int(float(match.group(1)) * unit)


def show_size(size: float) -> str:
    """Bytes for people: 97.9 MiB, 1.50 GiB."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.2f} GiB"
    return f"{size / (1 << 20):.1f} MiB"


def parse_budgets(raw: Any) -> Mapping[str, int]:
    """`memory:`: device ("cpu", or a GPU id as CUDA_VISIBLE_DEVICES names it) -> bytes. YAML
    reads an unquoted GPU id as a number: either is taken."""
    section = {} if raw is None else raw
    if not isinstance(section, dict):
        raise ConfigError("memory: expected a mapping of devices (cpu, 0, 1, ...) to sizes")
    budgets: dict[str, int] = {}
    for device, size in section.items():
        name = str(device)
        if name != "cpu" and not name.isdigit():
            raise ConfigError(f"memory.{name}: expected cpu or a GPU id (0, 1, ...) as the key")
        budgets[name] = parse_size(size, f"memory.{name}")
    return MappingProxyType(budgets)


def parse_scaling(raw: Any) -> ScalingConfig:
    section = mapping(raw, "scaling")
    reject_unknown(section, keys(ScalingConfig), "scaling.")
    residency = checked(
        section,
        "min_residency",
        lambda v: v == "auto" or non_neg_num(v),
        "auto or seconds >= 0",
        "scaling.",
        "auto",
    )
    spare = checked(
        section,
        "spare_worker",
        lambda v: v in ("auto", True, False),
        "auto, true or false",
        "scaling.",
        "auto",
    )
    return ScalingConfig(
        min_residency=None if residency == "auto" else float(residency),
        spare_worker=None if spare == "auto" else bool(spare),
    )


def parse_replica_range(section: dict[str, Any], remote: bool, where: str) -> ReplicaRange:
    """`replicas`: a number (a fixed pool) or {min, max}. A model with upstreams may have no
    local replica (the default there, unless it names a `path` to load)."""
    raw = section.get("replicas", 1 if "path" in section or not remote else 0)
    if isinstance(raw, dict):
        return _parse_range(raw, remote, where)
    floor = 0 if remote else 1
    if not is_int(raw) or raw < floor:
        expected = "an integer >= 0" if remote else "a positive integer"
        raise ConfigError(
            f"{where}replicas: expected {expected} or {{min: N, max: M}}, got {shown(raw)}"
        )
    return ReplicaRange(raw, raw)


def _parse_range(raw: dict[str, Any], remote: bool, where: str) -> ReplicaRange:
    reject_unknown(raw, {"min", "max"}, where + "replicas.")
    low = checked(
        raw, "min", lambda v: is_int(v) and v >= 0, "an integer >= 0", where + "replicas.", 0
    )
    if "max" not in raw:
        raise ConfigError(f"{where}replicas.max: required with min (the most replicas to run)")
    high = checked(
        raw,
        "max",
        lambda v: is_int(v) and v >= max(low, 0 if remote else 1),
        f"an integer >= min ({low}) and >= 1",
        where + "replicas.",
        None,
    )
    return ReplicaRange(int(low), int(high))
