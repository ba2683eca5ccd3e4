"""The replica-driver interface: what runs the replicas of one kind (local worker processes,
remote servers) and reports what it sees of them to the registry, the owner of their state."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from ..config.file import HealthConfig, ModelConfig
from .registry import Registry, Replica

__all__ = ["Driver"]


class Driver:
    """Runs replicas of one `kind`; how they are checked is read from `health()` at every
    check (the supervisor owns it: a reload changes it there)."""

    kind = ""

    def __init__(
        self, registry: Registry, health: Callable[[], HealthConfig], session: aiohttp.ClientSession
    ) -> None:
        self._health = health
        self._registry = registry
        self._session = session  # for health checks: each sets its own timeout

    @property
    def health(self) -> HealthConfig:
        return self._health()

    async def run(self, model: ModelConfig, replica: Replica) -> None:
        """Keep `replica` serving until cancelled: start it if it is ours to start, check it,
        and tell the registry each change."""
        raise NotImplementedError

    async def stop(self, replicas: list[Replica], grace: float) -> None:
        """End what runs `replicas` (their `run` already cancelled), within `grace` seconds."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the driver holds beside its replicas (the gateway is stopping)."""
