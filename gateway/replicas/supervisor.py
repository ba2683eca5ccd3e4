"""The supervisor: keeps every replica of every model running, through its replica driver.

A local replica is a worker process (gateway/replicas/local_driver.py), a remote one a server
elsewhere that is health-checked (gateway/replicas/remote_driver.py); the supervisor runs one task
per replica in the driver of its kind, and stops them. A `dns:` upstream is a set of remote
replicas that follows what its name resolves to (gateway/replicas/discovery.py): an address that
appears is added, one that vanishes drains and leaves. Nothing past the supervisor asks which
kind a replica is: the drivers report to the registry, the one owner of replica state.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import aiohttp

from ..config.file import DnsUpstream, GatewayConfig, HealthConfig, ModelConfig, UpstreamConfig
from .discovery import resolve
from .driver import Driver
from .local_driver import LocalDriver
from .registry import Registry, Replica
from .remote_driver import RemoteDriver

__all__ = ["Supervisor"]


class Supervisor:
    """Starts, watches and stops the replicas of every configured model."""

    def __init__(self, config: GatewayConfig, registry: Registry):
        self._health = config.health
        self._models = config.models
        self._keep_spare = _wants_spare(config)
        self._registry = registry
        self._tasks: dict[Replica, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._drivers: dict[str, Driver] = {}
        self._discovery: dict[str, list[asyncio.Task[None]]] = {}  # by model: DNS watchers
        self._retiring: set[asyncio.Task[None]] = set()  # replicas that left DNS, draining
        self._drain_timeout = config.server.drain_timeout  # for a replica that left DNS
        # Where a local replica started by `start_model` runs (the scaler places by memory).
        self.placer: Callable[[ModelConfig, int], str] = _configured_device

    async def start(self) -> None:
        """Register every replica and start them all at once; does not wait for them."""
        self._session = aiohttp.ClientSession()  # every check sets its own timeout
        local = LocalDriver(
            self._registry, self._current_health, self._session, lambda: self._keep_spare
        )
        self._drivers = {
            "local": local,
            "remote": RemoteDriver(self._registry, self._current_health, self._session),
        }
        for model in self._models:
            self.start_model(model)
        local.prepare()

    def _current_health(self) -> HealthConfig:
        """What the drivers check replicas by: this config fact's one owner is here."""
        return self._health

    def apply_settings(self, config: GatewayConfig) -> None:
        """A reload's health checks, drain timeout and spare worker, from now on."""
        self._health, self._drain_timeout = config.health, config.server.drain_timeout
        self._keep_spare = _wants_spare(config)
        local = self._drivers.get("local")
        if isinstance(local, LocalDriver):
            local.prepare()

    def start_model(self, model: ModelConfig) -> None:
        """Register a model; start its `min` local replicas and its upstreams."""
        self._registry.add_model(model.name)
        for index in range(model.floor):
            self.start_replica(model, index)
        self.start_upstreams(model)

    def start_replica(self, model: ModelConfig, index: int, device: str | None = None) -> Replica:
        """Register a local replica in slot `index` on `device` (by default where `placer`
        puts it) and keep a worker running for it."""
        device = device or self.placer(model, index)
        replica = self._registry.add_replica(model.name, index, device, model.capacity)
        return self._run(model, replica)

    def start_upstreams(self, model: ModelConfig) -> None:
        """Register `model`'s remote replicas (numbered after its local slots) and check them;
        follow its DNS names."""
        for index, upstream in enumerate(model.upstreams, start=model.replicas):
            if isinstance(upstream, DnsUpstream):
                watch = asyncio.create_task(self._follow(model, upstream))
                self._discovery.setdefault(model.name, []).append(watch)
            else:
                self._add_remote(model, index, upstream)

    def _add_remote(self, model: ModelConfig, index: int, upstream: UpstreamConfig) -> Replica:
        return self._run(model, self._registry.add_remote(model.name, index, upstream))

    async def _follow(self, model: ModelConfig, entry: DnsUpstream) -> None:
        """Keep one replica per address `entry`'s name resolves to, until cancelled."""
        held: dict[str, Replica] = {}
        while True:
            found = await resolve(entry)
            if found is not None:  # None: the lookup failed; keep what is there
                for address in found - held.keys():
                    held[address] = self._add_remote(
                        model, self._free_index(model), entry.at(address)
                    )
                for address in held.keys() - found:
                    self._retire_later(held.pop(address))
            await asyncio.sleep(entry.resolve_every)

    def _retire_later(self, replica: Replica) -> None:
        """Retire `replica` in the background (its drain may take a while)."""
        retiring = asyncio.create_task(self.retire(replica))
        self._retiring.add(retiring)  # the loop keeps only a weak reference to a task
        retiring.add_done_callback(self._retiring.discard)

    def _free_index(self, model: ModelConfig) -> int:
        """The first replica number past the local slots and static upstreams that is free."""
        taken = {r.index for r in self._registry.replicas(model.name)}
        index = model.replicas + len(model.upstreams)
        while index in taken:
            index += 1
        return index

    async def retire_model(self, model: str) -> None:
        """Stop following `model`'s DNS names; retire all its replicas."""
        await self._stop_following(model)
        await asyncio.gather(*(self.retire(r) for r in list(self._registry.replicas(model))))

    async def retire(self, replica: Replica) -> None:
        """Drain `replica` (no new requests; those in flight finish, up to the drain timeout),
        then stop it."""
        self._registry.mark_draining(replica)
        await self._registry.until(lambda: replica.in_flight == 0, self._drain_timeout)
        await self.stop_replica(replica)

    def local(self, model: str) -> list[Replica]:
        """`model`'s replicas in local slots (worker processes), by slot."""
        return sorted(
            (r for r in self._registry.replicas(model) if r.kind == "local"), key=lambda r: r.index
        )

    async def replace_upstreams(self, model: ModelConfig) -> None:
        """Check `model`'s new upstreams, then forget the old ones (requests on them finish:
        nothing of theirs runs here)."""
        old = [r for r in self._registry.replicas(model.name) if r.kind == "remote"]
        await self._stop_following(model.name)
        self.start_upstreams(model)
        await asyncio.gather(*(self.stop_replica(replica) for replica in old))

    async def stop_replica(self, replica: Replica, grace: float = 5.0) -> None:
        """Stop keeping it running, stop what runs it, forget it."""
        await self._stop([replica], grace)
        self._registry.remove_replica(replica)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every replica; SIGKILL the workers left after `grace`."""
        for name in list(self._discovery):
            await self._stop_following(name)
        await self._stop(list(self._tasks), grace)
        await asyncio.gather(*(driver.close() for driver in self._drivers.values()))
        if self._session is not None:
            await self._session.close()

    async def _stop_following(self, model: str) -> None:
        watchers = self._discovery.pop(model, [])
        for watch in watchers:
            watch.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

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


def _configured_device(model: ModelConfig, index: int) -> str:
    return model.device(index) or "cpu"


def _wants_spare(config: GatewayConfig) -> bool:
    """A spare worker process, for our workers' replicas loaded on demand (where the setting
    allows one)."""
    on_demand = any(model.on_demand and model.uses_worker for model in config.models)
    return on_demand and config.scaling.keeps_spare(os.cpu_count())
