"""The gateway's state: the running config and the parts built from it, shared by every request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config.file import GatewayConfig, KeyConfig, ModelConfig, OutlierConfig
from .errors import ModelNotFound
from .limits.local import Limits, LocalLimits
from .limits.redis_store import RedisLimits
from .pool.proxy import Proxy
from .pool.scaler import Scaler
from .pool.scheduler import QueuePolicy, Scheduler
from .replicas.outliers import Outliers
from .replicas.registry import Registry
from .replicas.supervisor import Supervisor

__all__ = ["Gateway", "build_gateway", "policy"]


@dataclass
class Gateway:
    """Everything a request needs; a reload swaps `config` (and `by_name`) in place."""

    config: GatewayConfig
    source: Path | None
    registry: Registry
    scheduler: Scheduler
    proxy: Proxy
    supervisor: Supervisor
    limits: Limits
    started_at: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.by_name: dict[str, ModelConfig] = self.config.model_by_name()
        self.draining = False
        # Replicas above each model's min, on demand: reads the running config through here.
        self.scaler = Scaler(lambda: self.config, self.registry, self.scheduler, self.supervisor)
        # Ejects replicas whose answers fail too often, by each model's running `outlier`.
        self.outliers = Outliers(self.registry, self.outlier_policy)

    def outlier_policy(self, name: str) -> OutlierConfig | None:
        """The `outlier` settings of the model `name` (None once a reload removed it)."""
        model = self.by_name.get(name)
        return None if model is None else model.outlier

    def begin_drain(self) -> None:
        """Refuse new requests from now on; those queued or in flight go on."""
        self.draining = True

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is queued or in flight; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.registry.busy() or self.scheduler.queued_total():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def set_config(self, config: GatewayConfig) -> None:
        """Serve `config`'s names from now on (a reload): new ones queue until ready."""
        self.config = config
        self.by_name = config.model_by_name()

    def resolve(self, name: str, caller: KeyConfig) -> ModelConfig:
        """The model `name` (or alias) names; 404 for one `caller` may not use, as if it did not
        exist (a key's allow-list is not a list of what else is served)."""
        model = self.by_name.get(name)
        if model is None or (caller.models is not None and not caller.allows(model.names)):
            raise ModelNotFound(name, self.visible(caller))
        return model

    def model_status(self, name: str) -> dict[str, object]:
        """A model's readiness (its `min` replicas count) and load state, by its name."""
        model = self.by_name.get(name)
        return self.registry.model_status(name, on_demand=model is not None and not model.floor)

    def visible(self, caller: KeyConfig) -> list[str]:
        """The names and aliases `caller` may use."""
        return [name for name, model in self.by_name.items() if caller.allows(model.names)]


def policy(model: ModelConfig) -> QueuePolicy:
    """The queue limits a model's entry sets."""
    return QueuePolicy(model.max_queue, model.queue_timeout, model.affinity, scales=model.on_demand)


def build_gateway(config: GatewayConfig, source: Path | None = None) -> Gateway:
    registry = Registry()
    return Gateway(
        config=config,
        source=source,
        registry=registry,
        scheduler=Scheduler(registry, {m.name: policy(m) for m in config.models}),
        proxy=Proxy(),
        supervisor=Supervisor(config, registry),
        limits=LocalLimits() if config.redis.url is None else RedisLimits(config.redis),
    )
