"""The scaler: moves each model's local replica count between its `min` and `max`.

A request that has to wait tells the scaler (`demand`); when as many wait as the model's
`scale_up_queue` (or any, where it has no replica), another replica starts on the device placement
picks (gateway/pool/placement.py), after evicting what must leave for it. Each second it also
stops replicas above `min` that served nothing for `idle_ttl`, and retries the starts that waited
for memory. It decides from the registry's and the scheduler's state; the supervisor does the
starting and stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from ..config.file import GatewayConfig, ModelConfig
from ..errors import InvalidRequest, Unavailable
from ..replicas.devices import budgets
from ..replicas.footprint import needs
from ..replicas.lifecycle import StateChange
from ..replicas.registry import Registry, Replica, ReplicaState
from ..replicas.supervisor import Supervisor
from .placement import Decision, Refuse, Resident, Start, Wait, plan_start, rank_devices
from .scheduler import Scheduler

__all__ = ["Scaler", "candidates", "floor_plan"]

log = logging.getLogger("gateway.scaler")
S = ReplicaState
TICK = 1.0  # seconds between idle checks and retries of starts that waited for memory
PATIENCE = 2.0  # seconds a start waits for replicas in use (min_residency: auto) before preempting
_GONE = (S.DRAINING, S.STOPPED)


class Scaler:
    """Starts replicas on demand, evicts for them, stops idle ones."""

    def __init__(
        self,
        config: Callable[[], GatewayConfig],
        registry: Registry,
        scheduler: Scheduler,
        supervisor: Supervisor,
    ) -> None:
        self._config, self._registry = config, registry
        self._scheduler, self._supervisor = scheduler, supervisor
        self._budgets: tuple[GatewayConfig, dict[str, int]] | None = None
        self._acting: set[str] = set()  # models with a start (and its evictions) under way
        self._waiting: set[str] = set()  # models whose start waits for memory to be evictable
        self._waiting_since: dict[str, float] = {}  # since when (monotonic), for preemption
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        supervisor.placer = self.place
        scheduler.demand = self.demand
        registry.on_change(self._on_change)

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._ticker] if self._ticker else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def budgets(self) -> dict[str, int]:
        """Each device's memory budget under the running config (read once per config)."""
        config = self._config()
        if self._budgets is None or self._budgets[0] is not config:
            self._budgets = (config, budgets(config))
        return self._budgets[1]

    def place(self, model: ModelConfig, index: int) -> str:
        """The device of a replica started outside demand (a model's `min`): placed with what
        runs now, evicting nothing."""
        residents = self.residents()
        decision = self._plan(model, index, residents)
        if isinstance(decision, Start) and not decision.evict:
            return decision.device
        return candidates(model, index, self.budgets(), residents)[0]  # over budget: still runs

    def demand(self, model: str) -> None:
        """A request for `model` is waiting: start a replica if that is due."""
        if model in self._acting or self._ticker is None or self._ticker.done():
            return  # busy with it already; or not started, or stopped
        task = asyncio.create_task(self._consider(model))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def load(self, model: ModelConfig) -> str:
        """Start one more replica of `model` now (an admin's ask), evicting for it as demand
        would; the label of the replica started. Raises InvalidRequest at its max, and
        Unavailable (insufficient_memory) where it cannot fit now."""
        live = self._live(model.name)
        if len(live) >= model.replicas or model.name in self._acting:
            raise InvalidRequest(
                f"Model '{model.name}' runs {len(live)} of at most {model.replicas} replicas, "
                "or is starting one already."
            )
        self._acting.add(model.name)
        try:
            index = self._free_slot(model)
            decision = self._plan(model, index, self.residents())
            if not isinstance(decision, Start):
                raise Unavailable(decision.reason, retry_after=10, code="insufficient_memory")
            await self._evict(decision.evict)
            return self._supervisor.start_replica(model, index, decision.device).describe_name()
        finally:
            self._acting.discard(model.name)

    async def unload(self, model: ModelConfig) -> list[str]:
        """Stop `model`'s replicas above its `min` (each finishes what it serves first)."""
        live = self._live(model.name)
        leaving = sorted(live, key=lambda r: r.last_used)[: max(len(live) - model.floor, 0)]
        await asyncio.gather(*(self._supervisor.retire(r) for r in leaving))
        return [r.describe_name() for r in leaving]

    def residents(self) -> list[Resident]:
        """Every local replica holding memory, as placement sees it."""
        models = {m.name: m for m in self._config().models}
        return [
            r
            for name in self._registry.models()
            for r in self._residents_of(models.get(name), name)
        ]

    def _plan(
        self, model: ModelConfig, index: int, residents: list[Resident], preempt: bool = False
    ) -> Decision:
        """Where replica `index` of `model` would start now, and what must leave for it."""
        budgets = self.budgets()
        return plan_start(
            f"{model.name}[{index}]",
            candidates(model, index, budgets, residents),
            functools.partial(needs, model),
            budgets,
            residents,
            preempt,
        )

    def _live(self, model: str) -> list[Replica]:
        """`model`'s local replicas neither leaving nor gone."""
        return [r for r in self._supervisor.local(model) if r.state not in _GONE]

    def _residents_of(self, model: ModelConfig | None, name: str) -> list[Resident]:
        """`name`'s replicas (`model`: its entry, None once a reload removed it)."""
        local = sorted(
            (r for r in self._supervisor.local(name) if r.state is not S.STOPPED),
            key=lambda r: -r.last_used,
        )
        queued = self._scheduler.queued(name) if model is not None else 0
        staying = [r for r in local if r.state is not S.DRAINING]
        pinned = set(staying[: model.floor if model is not None else 0])  # the most recent
        return [
            Resident(
                label=r.describe_name(),
                model=name,
                device=r.device,
                usage=needs(model, r.device) if model is not None and not r.failing else {},
                last_used=r.last_used,
                pinned=r in pinned,
                leaving=r.state is S.DRAINING,
                idle=r.in_flight == 0 and not queued and r.state is S.READY,
                settles_in=self._settles_in(r),
                ref=r,
            )
            for r in local
        ]

    def _settles_in(self, replica: Replica) -> float:
        """Seconds until `replica` has been loaded for its minimum residency (inf: loading)."""
        if replica.loaded_at is None:
            return float("inf")
        fixed = self._config().scaling.min_residency
        residency = fixed if fixed is not None else replica.load_seconds or 0.0
        return replica.loaded_at + residency - time.time()

    async def _consider(self, name: str) -> None:
        if name in self._acting:  # another task got here first (both were asked at once)
            return
        model = next((m for m in self._config().models if m.name == name), None)
        if model is None or not self._due(model):
            self._waiting.discard(name)  # nothing waits for it any more
            self._waiting_since.pop(name, None)
            return
        self._acting.add(name)
        try:
            await self._scale_up(model)
        except Exception:
            log.exception("%s: could not start a replica on demand", name)
        finally:
            self._acting.discard(name)

    def _due(self, model: ModelConfig) -> bool:
        """Whether `model` should get another replica now."""
        live = self._live(model.name)
        queued = self._scheduler.queued(model.name)
        if not queued or len(live) >= model.replicas:
            return False
        if not live:
            return True
        return queued >= model.scale_up_queue and not any(r.state is S.STARTING for r in live)

    async def _scale_up(self, model: ModelConfig) -> None:
        self._waiting.discard(model.name)
        index = self._free_slot(model)
        residents = self.residents()
        waited = time.monotonic() - self._waiting_since.setdefault(model.name, time.monotonic())
        decision = self._plan(model, index, residents, preempt=waited >= self._patience())
        if not isinstance(decision, Wait):
            del self._waiting_since[model.name]
        if isinstance(decision, Wait):
            log.debug("%s", decision.reason)
            self._retry_when_settled(model.name, residents)
        elif isinstance(decision, Refuse):
            log.warning("%s", decision.reason)
            self._scheduler.refuse(
                model.name, Unavailable(decision.reason, retry_after=10, code="insufficient_memory")
            )
        else:
            await self._evict(decision.evict)
            log.info(
                "%s[%d]: starting on %s (%d waiting)",
                model.name,
                index,
                decision.device,
                self._scheduler.queued(model.name),
            )
            self._supervisor.start_replica(model, index, decision.device)

    def _patience(self) -> float:
        """How long a start waits for replicas in use before it evicts them anyway (drained)."""
        residency = self._config().scaling.min_residency
        return PATIENCE if residency is None else max(residency, 1.0)

    def _retry_when_settled(self, model: str, residents: Sequence[Resident]) -> None:
        """Look again when the next replica in the way may be evicted: as its residency ends
        or the wait runs out of patience (the tick would be up to a second late), or as one
        goes idle (`_on_change`)."""
        self._waiting.add(model)
        patience = self._waiting_since[model] + self._patience() - time.monotonic()
        soonest = min(
            (r.settles_in for r in residents if 0 < r.settles_in < float("inf")), default=patience
        )
        loop = asyncio.get_running_loop()
        for delay in {d for d in (soonest, patience) if d > 0}:
            loop.call_later(delay, self.demand, model)

    def _on_change(self, change: StateChange) -> None:
        # A replica free again, or gone: memory a waiting start wanted may be had now.
        if change.new in (S.READY, S.STOPPED) and self._waiting:
            for model in list(self._waiting):
                self.demand(model)

    async def _evict(self, leaving: Sequence[Resident]) -> None:
        """Retire `leaving`; return once they have no request in flight (at once for idle ones;
        a preempted one finishes what it serves). Their processes exit meanwhile (~0.15 s),
        while the new one starts (it imports before it allocates the model)."""
        replicas = [resident.ref for resident in leaving]
        for resident in leaving:
            how = "least recently used" if resident.idle else "in use, preempted after a wait"
            log.info("%s: evicted (%s) to make room", resident.label, how)
            task = asyncio.create_task(self._supervisor.retire(resident.ref))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        drain = self._config().server.drain_timeout
        await self._registry.until(lambda: not any(r.in_flight for r in replicas), drain)

    def _free_slot(self, model: ModelConfig) -> int:
        taken = {r.index for r in self._live(model.name)}
        return next(i for i in range(model.replicas) if i not in taken)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for model in self._config().models:
                if not model.on_demand:
                    continue  # a fixed pool: nothing to start or stop
                if self._scheduler.queued(model.name):
                    self.demand(model.name)
                elif model.idle_ttl is not None:
                    await self._stop_idle(model, model.idle_ttl)

    async def _stop_idle(self, model: ModelConfig, ttl: float) -> None:
        live = self._live(model.name)
        surplus = len(live) - model.floor
        now = time.monotonic()
        idle = [
            r for r in live if r.state is S.READY and not r.in_flight and now - r.last_used >= ttl
        ]
        for replica in sorted(idle, key=lambda r: r.last_used)[: max(surplus, 0)]:
            log.info("%s[%d]: idle for %g s; stopping", model.name, replica.index, ttl)
            await self._supervisor.retire(replica)


def candidates(
    model: ModelConfig, index: int, budgets: Mapping[str, int], residents: Sequence[Resident]
) -> list[str]:
    """The devices replica `index` of `model` may start on, best first: its configured one; with
    `gpus: auto`, the GPUs with a budget ranked for it (the CPU on a machine without GPUs)."""
    if not model.gpus_auto:
        return [model.device(index) or "cpu"]
    gpus = [device for device in budgets if device != "cpu"]
    return rank_devices(gpus, budgets, residents, model.name) if gpus else ["cpu"]


def floor_plan(config: GatewayConfig, device_budgets: dict[str, int]) -> list[tuple[str, str]]:
    """Where each model's `min` replicas go, in config order: (replica, device or why it cannot
    start). Raises nothing: `check-config` prints it, `serve` refuses a config it cannot fit."""
    residents: list[Resident] = []
    placed: list[tuple[str, str]] = []
    for model in config.models:
        for index in range(model.floor):
            label = f"{model.name}[{index}]"
            devices = candidates(model, index, device_budgets, residents)
            fit = functools.partial(needs, model)
            decision = plan_start(label, devices, fit, device_budgets, residents)
            if isinstance(decision, Start):
                residents.append(
                    Resident(
                        label,
                        model.name,
                        decision.device,
                        needs(model, decision.device),
                        0.0,
                        pinned=True,
                    )
                )
                placed.append((label, decision.device))
            else:
                placed.append((label, f"cannot start: {decision.reason}"))
    return placed
