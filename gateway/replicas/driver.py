"""The replica-driver interface: what runs the replicas of one kind (local worker processes,
remote servers) and reports what it sees of them to the registry, the owner of their state."""

from __future__ import annotations

import aiohttp

from ..config.file import HealthConfig, ModelConfig
from .registry import Registry, Replica

__all__ = ["Driver"]


class Driver:
    """Runs replicas of one `kind`; `health` (how they are checked) is read at every check."""

    kind = ""

    def __init__(self, registry: Registry, health: HealthConfig,
                 session: aiohttp.ClientSession) -> None:  # fmt: skip
        self.health = health
        self._registry = registry
        self._session = session  # for health checks: each sets its own timeout

    async def run(self, model: ModelConfig, replica: Replica) -> None:
        """Keep `replica` serving until cancelled: start it if it is ours to start, check it,
        and tell the registry each change."""
        raise NotImplementedError

    async def stop(self, replicas: list[Replica], grace: float) -> None:
        """End what runs `replicas` (their `run` already cancelled), within `grace` seconds."""
        raise NotImplementedError
