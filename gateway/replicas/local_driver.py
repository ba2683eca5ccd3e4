"""The local-process replica driver: one worker process per replica, restarted when it exits.

It spawns the worker (gateway/replicas/launch.py; for `engine: llama-server`, llama.cpp's own
server: gateway/replicas/server_launch.py), waits until it is ready, checks its status meanwhile,
and starts a new one after an exit, with backoff after failed starts. What it sees it reports
to the registry, the owner of replica state. Only here is the engine told apart: above the
driver a replica of either engine is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

import aiohttp

from ..config.file import HealthConfig, ModelConfig
from .driver import Driver
from .launch import Launch, Spare, describe_exit, spawn
from .registry import Registry, Replica
from .server_launch import ServerLaunch, spawn_server

__all__ = ["LocalDriver", "restart_delay"]

log = logging.getLogger("gateway.supervisor")

_FAILED_EXIT_WAIT = 3.0


def restart_delay(failures: int) -> float:
    """Seconds before the next start after `failures` starts in a row that never became ready."""
    return float(min(30.0, 0.5 * 2**failures))


class LocalDriver(Driver):
    """Runs each local replica's worker process."""

    kind = "local"

    def __init__(
        self,
        registry: Registry,
        health: Callable[[], HealthConfig],
        session: aiohttp.ClientSession,
        wants_spare: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(registry, health, session)
        self._procs: dict[Replica, asyncio.subprocess.Process] = {}
        # With replicas loaded on demand, one worker process waits ready-imported for the next
        # CPU replica: its half-second start is then off the waiting requests' path. Whether
        # one is wanted is read through `wants_spare` (the supervisor owns that setting).
        self._wants_spare = wants_spare
        self._spare: Spare | None = None
        self._refill: asyncio.Task[None] | None = None

    def prepare(self) -> None:
        """Start a spare worker process if one is wanted and none is there or starting; end
        the one there if none is wanted any more (a reload)."""
        if self._refill is not None and not self._refill.done():
            return
        if not self._wants_spare():
            spare, self._spare = self._spare, None
            if spare is not None:
                self._refill = asyncio.create_task(spare.close())
        elif self._spare is None or not self._spare.alive:
            self._refill = asyncio.create_task(self._start_spare())

    async def _start_spare(self) -> None:
        try:
            self._spare = await Spare.start()
        except Exception:  # no spare: replicas start the slow way
            log.exception("could not start a spare worker process")

    async def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
        spare, self._spare = self._spare, None
        if spare is not None:
            await spare.close()

    async def run(self, model: ModelConfig, replica: Replica) -> None:
        """Keep a worker running for `replica` until cancelled."""
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

    async def stop(self, replicas: list[Replica], grace: float) -> None:
        """Stop the workers of `replicas` (their `run` already cancelled): SIGTERM, then
        SIGKILL after `grace`."""
        procs = [self._procs.pop(r) for r in replicas if r in self._procs]
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        await asyncio.gather(*(_reap(proc, grace) for proc in procs))

    async def _launch(self, model: ModelConfig, replica: Replica) -> Launch | ServerLaunch:
        """Start what runs `replica`: llama-server, or our worker (from the spare, if it fits)."""
        if not model.uses_worker:
            return await spawn_server(model, replica.index, replica.device, self._session)
        spare, self._spare = self._spare, None
        launch = await spawn(model, replica.index, replica.device, spare)
        if spare is not None and launch.proc is not spare.proc:
            self._spare = spare  # not taken (a GPU replica): keep it for the next
        return launch

    async def _run_once(self, model: ModelConfig, replica: Replica) -> bool:
        """Run one worker process to its end; return whether it ever became ready."""
        launch = await self._launch(model, replica)
        proc = launch.proc
        self._procs[replica] = proc
        # How it says a request's end and the tokens used: our worker's way, or OpenAI's.
        replica.reports_ends = replica.reports_usage = launch.our_worker
        self._registry.mark_starting(replica, proc.pid, launch.port, launch.secret)
        log.info(
            "%s[%d]: started worker pid %d on port %d",
            model.name,
            replica.index,
            proc.pid,
            launch.port,
        )
        try:
            error = await launch.until_ready(model.startup_timeout)
            self.prepare()  # the next spare, once this one's load no longer needs the CPU
            if error is None:
                # Its status first: a replica enters rotation with its context known (a key's
                # token reservation is capped by it).
                await self._answers(replica, launch)
                self._registry.mark_ready(replica)  # the registry logs the change
                await self._watch(replica, launch)
            else:
                await _reap(proc, _FAILED_EXIT_WAIT)
        finally:
            launch.close()  # cancelled: the process stays in _procs, for `stop`
        self._procs.pop(replica, None)
        how = describe_exit(proc.returncode)
        said = error or launch.tail()
        log.warning(
            "%s[%d]: worker pid %d exited (%s)%s",
            model.name,
            replica.index,
            proc.pid,
            how,
            f": {said}" if said else "",
        )
        self._registry.mark_exited(replica, error, how)
        return error is None

    async def _watch(self, replica: Replica, launch: Launch | ServerLaunch) -> int:
        """Wait for the worker to exit, checking its status meanwhile.

        A worker that fails a check leaves rotation at once, comes back when a check passes,
        and is killed (then restarted) after `health.failures` failed checks in a row.
        """
        proc = launch.proc
        exited = asyncio.ensure_future(proc.wait())
        failures = 0
        while not (await asyncio.wait((exited,), timeout=self.health.interval))[0]:
            if await self._answers(replica, launch):
                failures = 0
                self._registry.mark_healthy(replica)
                continue
            failures += 1
            self._registry.mark_unhealthy(replica, f"{failures} status checks failed in a row")
            if failures >= self.health.failures:
                log.warning(
                    "%s[%d]: worker pid %d stopped answering; killing it",
                    replica.model,
                    replica.index,
                    proc.pid,
                )
                _signal(proc, signal.SIGKILL)
        return exited.result()

    async def _answers(self, replica: Replica, launch: Launch | ServerLaunch) -> bool:
        """Whether its status answers within the health timeout (noting its engine's counters
        and the context a request gets)."""
        status = await launch.status(self._session, self.health.timeout)
        if status is None:
            return False
        replica.engine, replica.n_ctx = status
        return True


async def _reap(proc: asyncio.subprocess.Process, grace: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
        return
    _signal(proc, signal.SIGKILL)
    await proc.wait()


def _signal(proc: asyncio.subprocess.Process, signum: int) -> None:
    # os.kill, not proc.kill(): that may reap a just-dead child first and confuse the watcher.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)
