"""Hot reload: read config.yaml again, validate all of it, then apply the difference.

An invalid file changes nothing. A valid one is applied as a plan (gateway/pool/plan.py): new
models start; removed ones stop taking requests, finish what they hold, then stop; replicas
scale; changed worker settings replace a model's replicas one at a time, each new worker
ready before an old one drains, so the model keeps serving. One reload runs at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .config.file import ConfigError, GatewayConfig, ModelConfig, load_config
from .pool.plan import ModelChange, ReloadPlan, plan_reload
from .replicas.registry import Replica, ReplicaState
from .state import Gateway, policy

__all__ = ["ReloadError", "ReloadOutcome", "Reloader"]

log = logging.getLogger("gateway.reload")

_POLL = 0.05


class ReloadError(Exception):
    """The new config was valid but could not be applied in full."""


class RollFailed(ReloadError):
    """A model's new worker settings did not load; its replicas keep the old ones."""

    def __init__(self, model: str, message: str):
        super().__init__(message)
        self.model = model


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    version: int  # of the config running now
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    at: float = field(default_factory=time.time)


class Reloader:
    """Owns the running config's version and applies reloads, one at a time."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway
        self._lock = asyncio.Lock()
        self._version = 1
        self._loaded_at = time.time()
        self._last: ReloadOutcome | None = None
        self._digest = _digest(gateway)

    def status(self) -> dict[str, Any]:
        gateway = self._gateway
        last = self._last
        return {
            "version": self._version,
            "source": str(gateway.source) if gateway.source else None,
            "loaded_at": self._loaded_at,
            "models": [m.name for m in gateway.config.models],
            "watch": gateway.config.watch,
            "reloading": self._lock.locked(),
            "last_reload": None if last is None else last.__dict__,
        }

    async def reload(self) -> ReloadOutcome:
        """Validate the config file in full; apply it if valid. Never raises."""
        async with self._lock:
            outcome = self._last = await self._reload()
            if outcome.ok:
                log.info("reload applied: %s", "; ".join(outcome.changes))
            else:
                log.error("reload failed: %s", outcome.error)
            return outcome

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the file's content changes, while the config says `watch: true`."""
        while True:
            await asyncio.sleep(interval)
            if self._gateway.config.watch and _digest(self._gateway) != self._digest:
                await self.reload()

    async def _reload(self) -> ReloadOutcome:
        gateway = self._gateway
        if gateway.source is None:
            return ReloadOutcome(False, self._version, error="the gateway has no config file")
        self._digest = _digest(gateway)
        try:
            new = load_config(gateway.source)
        except ConfigError as exc:
            return ReloadOutcome(
                False, self._version, error=f"invalid config, nothing changed: {exc}"
            )
        plan = plan_reload(gateway.config, new)
        if plan.empty:
            return ReloadOutcome(True, self._version, ["no changes"])
        self._version += 1
        self._loaded_at = time.time()
        try:
            await self._apply(plan, new)
        except ReloadError as exc:
            return ReloadOutcome(False, self._version, plan.describe(), str(exc))
        return ReloadOutcome(True, self._version, plan.describe())

    async def _apply(self, plan: ReloadPlan, new: GatewayConfig) -> None:
        """Apply `plan`; a model whose new settings failed stays on its old entry, so
        reloading the same file tries it again."""
        gateway = self._gateway
        old_entries = {m.name: m for m in gateway.config.models}
        for model in plan.add:
            gateway.scheduler.set_policy(model.name, policy(model))
            gateway.supervisor.start_model(model)
        for change in plan.change:
            gateway.scheduler.set_policy(change.model.name, policy(change.model))
        gateway.set_config(new)  # from here, removed names 404 and added names queue
        gateway.supervisor.apply_settings(new)
        results = await asyncio.gather(
            *(self._resize(change) for change in plan.change),
            *(self._remove(name) for name in plan.remove),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            kept = {e.model: old_entries[e.model] for e in failed if isinstance(e, RollFailed)}
            models = tuple(kept.get(m.name, m) for m in new.models)
            gateway.set_config(dataclasses.replace(new, models=models))
            raise ReloadError("; ".join(str(e) for e in failed))

    async def _resize(self, change: ModelChange) -> None:
        model, supervisor = change.model, self._gateway.supervisor
        if change.upstreams:
            await supervisor.replace_upstreams(model)
        running = supervisor.local(model.name)
        if change.roll:
            for old in [r for r in running if r.index < model.replicas]:
                await self._replace(model, old)
        for old in reversed([r for r in running if r.index >= model.replicas]):
            await self._retire(old)
        taken = {r.index for r in supervisor.local(model.name)}
        for index in range(model.floor):  # above its min, the scaler starts what demand asks
            if index not in taken:
                supervisor.start_replica(model, index)

    async def _replace(self, model: ModelConfig, old: Replica) -> None:
        """Start the new worker for `old`'s slot; once it is ready, retire `old`."""
        supervisor = self._gateway.supervisor
        new = supervisor.start_replica(model, old.index)
        if not await self._becomes_ready(new, model.startup_timeout):
            reason = new.error or "it did not become ready"
            await supervisor.stop_replica(new)
            raise RollFailed(
                model.name,
                f"{model.name}[{old.index}]: the new settings failed ({reason}); "
                "the replica keeps running its old settings",
            )
        await self._retire(old)

    async def _retire(self, replica: Replica) -> None:
        await self._gateway.supervisor.retire(replica)

    async def _remove(self, name: str) -> None:
        """Serve what is already queued for a removed model, then retire its replicas."""
        gateway = self._gateway
        await self._until(lambda: gateway.scheduler.queued(name) == 0, self._drain_timeout())
        await gateway.supervisor.retire_model(name)
        gateway.scheduler.remove_model(name)
        gateway.registry.remove_model(name)

    def _drain_timeout(self) -> float:
        return self._gateway.config.server.drain_timeout

    async def _becomes_ready(self, replica: Replica, timeout: float) -> bool:
        await self._gateway.registry.until(lambda: replica.state in _SETTLED, timeout)
        return replica.state in _SERVING

    @staticmethod
    async def _until(condition: Any, timeout: float) -> None:
        """Poll `condition` (scheduler state, which sends no events) until it holds."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(_POLL)


_SERVING = (ReplicaState.READY, ReplicaState.BUSY)
_SETTLED = (*_SERVING, ReplicaState.FAILED)


def _digest(gateway: Gateway) -> str:
    try:
        return hashlib.sha256(gateway.source.read_bytes()).hexdigest() if gateway.source else ""
    except OSError:
        return ""
