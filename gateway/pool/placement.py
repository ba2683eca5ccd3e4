"""Where a new replica goes and what must leave for it: pure decisions over memory budgets.

A replica's need is bytes per device (gateway/replicas/footprint.py). It starts on the first
candidate device where it fits; else where evicting idle replicas above their model's `min`,
least recently used first, makes room; else it waits while replicas that could be evicted later
(busy now, or loaded too recently) hold the memory; else it is refused, naming the holders.
A device with no budget is not accounted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.scaling import show_size

__all__ = [
    "Decision",
    "Refuse",
    "Resident",
    "Start",
    "Wait",
    "plan_start",
    "rank_devices",
    "used",
]

Need = Mapping[str, int]  # bytes per device


@dataclass(frozen=True)
class Resident:
    """A running (or starting) replica, as placement sees it."""

    label: str  # "smollm2[0]", for people
    model: str
    device: str
    usage: Need
    last_used: float  # when it last finished a request (or started), for least-recently-used
    pinned: bool = False  # one of its model's `min` replicas: never evicted
    idle: bool = True  # nothing in flight and nothing queued for its model
    settles_in: float = 0.0  # seconds until it has been loaded long enough to be evicted
    leaving: bool = False  # draining already: its memory is freed soon, it cannot go twice
    ref: Any = field(default=None, compare=False)  # what the caller knows it by (its Replica)

    @property
    def evictable(self) -> bool:
        return _preemptible(self) and self.idle


@dataclass(frozen=True)
class Start:
    device: str
    evict: tuple[Resident, ...] = ()


@dataclass(frozen=True)
class Wait:
    """Memory is held by replicas that may be evicted later (busy, or loaded just now)."""

    reason: str


@dataclass(frozen=True)
class Refuse:
    """Nothing that could ever be evicted would make room."""

    reason: str


Decision = Start | Wait | Refuse


def used(residents: Iterable[Resident]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for resident in residents:
        total.update(resident.usage)
    return dict(total)


def rank_devices(
    devices: Iterable[str], budgets: Mapping[str, int], residents: Sequence[Resident], model: str
) -> list[str]:
    """GPUs for a new replica of `model` (`gpus: auto`): those holding fewest of its replicas
    first (spread), then the most free budget."""
    taken, mine = used(residents), Counter(r.device for r in residents if r.model == model)
    return sorted(devices, key=lambda d: (mine[d], -(budgets.get(d, 0) - taken.get(d, 0)), d))


def plan_start(
    label: str,
    candidates: Sequence[str],
    need_on: Callable[[str], Need],
    budgets: Mapping[str, int],
    residents: Sequence[Resident],
    preempt: bool = False,
) -> Decision:
    """Where replica `label` starts, among `candidates` in order of preference. `preempt`: it
    has waited long enough that replicas in use may be evicted for it too (drained first), once
    they have been loaded their minimum time, so a busy model cannot starve a waiting one."""
    for device in candidates:
        if _fits(need_on(device), budgets, used(residents)):
            return Start(device)
    may_go = _preemptible if preempt else _evictable
    for device in candidates:
        evict = _evictions(need_on(device), budgets, residents, may_go)
        if evict is not None:
            return Start(device, evict)
    for device in candidates:
        if _evictions(need_on(device), budgets, residents, lambda r: not r.pinned) is not None:
            return Wait(f"{label} waits for memory held by replicas in use or just loaded")
    return Refuse(_refusal(label, candidates[0], need_on(candidates[0]), budgets, residents))


def _evictable(resident: Resident) -> bool:
    return resident.evictable


def _preemptible(resident: Resident) -> bool:
    return not resident.pinned and not resident.leaving and resident.settles_in <= 0


def _fits(need: Need, budgets: Mapping[str, int], taken: Mapping[str, int]) -> bool:
    return all(
        device not in budgets or taken.get(device, 0) + size <= budgets[device]
        for device, size in need.items()
    )


def _evictions(
    need: Need,
    budgets: Mapping[str, int],
    residents: Sequence[Resident],
    may_go: Callable[[Resident], bool],
) -> tuple[Resident, ...] | None:
    """The least recently used residents that `may_go`, fewest first, whose leaving makes room
    for `need`; None if all of them leaving would not."""
    staying = list(residents)
    gone: list[Resident] = []
    for resident in sorted(filter(may_go, residents), key=lambda r: r.last_used):
        if _fits(need, budgets, used(staying)):
            break
        if resident.usage.keys() & need.keys():  # it frees memory where this one needs it
            staying.remove(resident)
            gone.append(resident)
    return tuple(gone) if _fits(need, budgets, used(staying)) else None


def _refusal(
    label: str, device: str, need: Need, budgets: Mapping[str, int], residents: Sequence[Resident]
) -> str:
    short = [d for d, size in need.items() if d in budgets and size > 0]
    parts = []
    for d in short:
        holders = [r for r in residents if r.usage.get(d)]
        held = ", ".join(
            f"{r.label} {show_size(r.usage[d])}" + (" (min)" if r.pinned else "") for r in holders
        )
        parts.append(
            f"{d}: needs {show_size(need[d])} of a {show_size(budgets[d])} budget"
            + (f"; held by {held}" if held else "")
        )
    return f"not enough memory to start {label} on {device} ({'; '.join(parts)})"
