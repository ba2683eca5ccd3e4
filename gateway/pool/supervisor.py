"""The supervisor: one worker process per local replica, started in parallel and restarted on exit.

It is the only writer of replica lifecycle state in the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import aiohttp

from ..config.file import GatewayConfig, HealthConfig, ModelConfig
from .launch import describe_exit, spawn
from .registry import Registry, Replica

__all__ = ["Supervisor", "restart_delay"]

log = logging.getLogger("gateway.supervisor")

_FAILED_EXIT_WAIT = 3.0


def restart_delay(failures: int) -> float:
    """Seconds before the next start after `failures` starts in a row that never became ready."""
    return float(min(30.0, 0.5 * 2**failures))


class Supervisor:
    """Spawns, watches and restarts the workers of every configured model."""

    def __init__(self, config: GatewayConfig, registry: Registry):
        self._health = config.health
        self._models = config.models
        self._registry = registry
        self._tasks: dict[Replica, asyncio.Task[None]] = {}
        self._procs: dict[Replica, asyncio.subprocess.Process] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Register every replica and start all workers at once; does not wait for them."""
        self._session = aiohttp.ClientSession()  # every status call sets its own timeout
        for model in self._models:
            self.start_model(model)

    def set_health(self, health: HealthConfig) -> None:
        self._health = health

    def start_model(self, model: ModelConfig) -> None:
        self._registry.add_model(model.name)
        for index in range(model.replicas):
            self.start_replica(model, index)

    def start_replica(self, model: ModelConfig, index: int) -> Replica:
        """Register a replica in slot `index` and keep a worker running for it."""
        device = model.device(index) or "cpu"
        replica = self._registry.add_replica(model.name, index, device, model.capacity)
        self._tasks[replica] = asyncio.create_task(self._keep_running(model, replica))
        return replica

    async def stop_replica(self, replica: Replica, grace: float = 5.0) -> None:
        """Stop restarting it, stop its worker (SIGTERM, SIGKILL after `grace`), forget it."""
        await self._stop([replica], grace)
        self._registry.remove_replica(replica)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every worker; SIGKILL what is left after `grace`."""
        await self._stop(list(self._tasks), grace)
        if self._session is not None:
            await self._session.close()

    async def _stop(self, replicas: list[Replica], grace: float) -> None:
        procs = [self._procs[r] for r in replicas if r in self._procs]
        tasks = [self._tasks.pop(r) for r in replicas if r in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        await asyncio.gather(*(self._reap(proc, grace) for proc in procs))
        for replica in replicas:
            self._registry.mark_stopped(replica)

    async def _keep_running(self, model: ModelConfig, replica: Replica) -> None:
        failures = 0
        while True:
            try:
                became_ready = await self._run_once(model, replica)
            except Exception as exc:  # no port, no file descriptors, no fork: try again later
                log.exception("%s[%d]: could not start a worker", model.name, replica.index)
                self._registry.mark_exited(replica, f"could not start the worker: {exc}", None)
                became_ready = False
            failures = 0 if became_ready else failures + 1
            await asyncio.sleep(restart_delay(failures))

    async def _run_once(self, model: ModelConfig, replica: Replica) -> bool:
        """Run one worker process to its end; return whether it ever became ready."""
        launch = await spawn(model, replica.index)
        proc = launch.proc
        self._procs[replica] = proc
        self._registry.mark_starting(replica, proc.pid, launch.port, launch.secret)
        log.info("%s[%d]: started worker pid %d on port %d", model.name, replica.index,
                 proc.pid, launch.port)  # fmt: skip
        try:
            error = await launch.until_ready(model.startup_timeout)
            if error is None:
                self._registry.mark_ready(replica)  # the registry logs the change
                await self._watch(replica, proc)
            else:
                await self._reap(proc, _FAILED_EXIT_WAIT)
        finally:
            launch.close()
            self._procs.pop(replica, None)
        how = describe_exit(proc.returncode)
        log.warning("%s[%d]: worker pid %d exited (%s)%s", model.name, replica.index, proc.pid,
                    how, f": {error}" if error else "")  # fmt: skip
        self._registry.mark_exited(replica, error, how)
        return error is None

    async def _watch(self, replica: Replica, proc: asyncio.subprocess.Process) -> int:
        """Wait for the worker to exit, checking its status meanwhile.

        A worker that fails a check leaves rotation at once, comes back when a check passes,
        and is killed (then restarted) after `health.failures` failed checks in a row.
        """
        health = self._health
        exited = asyncio.ensure_future(proc.wait())
        failures = 0
        while not (await asyncio.wait((exited,), timeout=health.interval))[0]:
            if await self._status(replica, health.timeout):
                failures = 0
                self._registry.mark_healthy(replica)
                continue
            failures += 1
            self._registry.mark_unhealthy(replica, f"{failures} status checks failed in a row")
            if failures >= health.failures:
                log.warning("%s[%d]: worker pid %d stopped answering; killing it",
                            replica.model, replica.index, proc.pid)  # fmt: skip
                _signal(proc, signal.SIGKILL)
        return exited.result()

    async def _status(self, replica: Replica, timeout: float) -> dict[str, Any] | None:
        assert self._session is not None
        headers = {"Authorization": replica.auth}
        try:
            async with self._session.get(
                replica.url + "/status", headers=headers, timeout=_timeout(timeout)
            ) as resp:
                resp.raise_for_status()
                status: dict[str, Any] = await resp.json()
                return status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    @staticmethod
    async def _reap(proc: asyncio.subprocess.Process, grace: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
            return
        _signal(proc, signal.SIGKILL)
        await proc.wait()


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _signal(proc: asyncio.subprocess.Process, signum: int) -> None:
    # os.kill, not proc.kill(): that may reap a just-dead child first and confuse the watcher.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)
