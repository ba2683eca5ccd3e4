"""The supervisor: keeps every replica of every model running, through its replica driver.

A local replica is a worker process (gateway/pool/local_driver.py), a remote one a server
elsewhere that is health-checked (gateway/pool/remote_driver.py); the supervisor runs one task
per replica in the driver of its kind, and stops them. Nothing past it asks which kind a
replica is: the drivers report to the registry, the one owner of replica state.
"""

from __future__ import annotations

import asyncio

import aiohttp

from ..config.file import GatewayConfig, HealthConfig, ModelConfig, UpstreamConfig
from .local_driver import LocalDriver, restart_delay
from .registry import Registry, Replica
from .remote_driver import RemoteDriver

__all__ = ["Supervisor", "restart_delay"]


class Supervisor:
    """Starts, watches and stops the replicas of every configured model."""

    def __init__(self, config: GatewayConfig, registry: Registry):
        self._health = config.health
        self._models = config.models
        self._registry = registry
        self._tasks: dict[Replica, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._drivers: dict[str, LocalDriver | RemoteDriver] = {}

    async def start(self) -> None:
        """Register every replica and start them all at once; does not wait for them."""
        self._session = aiohttp.ClientSession()  # every check sets its own timeout
        self._drivers = {
            "local": LocalDriver(self._registry, self._health, self._session),
            "remote": RemoteDriver(self._registry, self._health, self._session),
        }
        for model in self._models:
            self.start_model(model)

    def set_health(self, health: HealthConfig) -> None:
        self._health = health
        for driver in self._drivers.values():
            driver.health = health

    def start_model(self, model: ModelConfig) -> None:
        self._registry.add_model(model.name)
        for index in range(model.replicas):
            self.start_replica(model, index)
        self.start_upstreams(model)

    def start_replica(self, model: ModelConfig, index: int) -> Replica:
        """Register a local replica in slot `index` and keep a worker running for it."""
        device = model.device(index) or "cpu"
        replica = self._registry.add_replica(model.name, index, device, model.capacity)
        return self._run(model, replica)

    def start_upstreams(self, model: ModelConfig) -> list[Replica]:
        """Register `model`'s remote replicas (numbered after its local slots) and check them."""
        return [self._run(model, self._registry.add_remote(model.name, index, upstream))
                for index, upstream in _numbered(model)]  # fmt: skip

    def local(self, model: str) -> list[Replica]:
        """`model`'s replicas in local slots (worker processes), by slot."""
        return sorted((r for r in self._registry.replicas(model) if r.kind == "local"),
                      key=lambda r: r.index)  # fmt: skip

    async def replace_upstreams(self, model: ModelConfig) -> None:
        """Check `model`'s new upstreams, then forget the old ones (requests on them finish:
        nothing of theirs runs here)."""
        old = [r for r in self._registry.replicas(model.name) if r.kind == "remote"]
        self.start_upstreams(model)
        await asyncio.gather(*(self.stop_replica(replica) for replica in old))

    async def stop_replica(self, replica: Replica, grace: float = 5.0) -> None:
        """Stop keeping it running, stop what runs it, forget it."""
        await self._stop([replica], grace)
        self._registry.remove_replica(replica)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every replica; SIGKILL the workers left after `grace`."""
        await self._stop(list(self._tasks), grace)
        if self._session is not None:
            await self._session.close()

    def _run(self, model: ModelConfig, replica: Replica) -> Replica:
        driver = self._drivers[replica.kind]
        self._tasks[replica] = asyncio.create_task(driver.run(model, replica))
        return replica

    async def _stop(self, replicas: list[Replica], grace: float) -> None:
        tasks = [self._tasks.pop(r) for r in replicas if r in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(driver.stop(replicas, grace) for driver in self._drivers.values()))
        for replica in replicas:
            self._registry.mark_stopped(replica)


def _numbered(model: ModelConfig) -> list[tuple[int, UpstreamConfig]]:
    """Each upstream with its replica number: after the local replicas' slots."""
    return [(model.replicas + i, upstream) for i, upstream in enumerate(model.upstreams)]
