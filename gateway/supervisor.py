"""The supervisor: one worker process per local replica, started in parallel and restarted on exit.

It is the only writer of replica lifecycle state in the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import aiohttp

from .config import GatewayConfig, HealthConfig, ModelConfig
from .registry import Registry, Replica

__all__ = ["Supervisor", "llama_params", "restart_delay", "worker_command", "worker_env"]

log = logging.getLogger("gateway.supervisor")

_FAILED_EXIT_WAIT = 3.0


def restart_delay(failures: int) -> float:
    """Seconds before the next start after `failures` starts in a row that never became ready."""
    return float(min(30.0, 0.5 * 2**failures))


def llama_params(model: ModelConfig) -> dict[str, Any]:
    """The Llama kwargs a replica gets: a replica pinned to GPUs offloads every layer by default."""
    params = dict(model.llama)
    params.setdefault("n_gpu_layers", -1 if model.gpus else 0)
    return params


def worker_command(model: ModelConfig, port: int, parent_pid: int) -> list[str]:
    command = [sys.executable, "-m", "workers", "--model-name", model.name,
               "--host", "127.0.0.1", "--port", str(port), "--engine", model.engine,
               "--parent-pid", str(parent_pid)]  # fmt: skip
    if model.path is not None:
        command += ["--model-path", str(model.path)]
    if model.engine == "llama":
        command += ["--llama-json", json.dumps(llama_params(model))]
    else:
        command += ["--standin-json", json.dumps(dict(model.standin))]
        command += ["--concurrency", str(model.capacity)]
    return command


def worker_env(model: ModelConfig, index: int, base: dict[str, str]) -> dict[str, str]:
    """The worker's environment: CPU replicas see no GPU at all, so a CUDA build cannot grab one."""
    return {**base, "CUDA_VISIBLE_DEVICES": model.device(index) or ""}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
            became_ready = await self._run_once(model, replica)
            failures = 0 if became_ready else failures + 1
            await asyncio.sleep(restart_delay(failures))

    async def _run_once(self, model: ModelConfig, replica: Replica) -> bool:
        """Run one worker process to its end; return whether it ever became ready."""
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            *worker_command(model, port, os.getpid()),
            env=worker_env(model, replica.index, dict(os.environ)),
            stdin=asyncio.subprocess.DEVNULL,
            # Its own session: a Ctrl-C or a signal to the gateway's process group must not stop
            # a worker mid-request; the gateway drains, then stops its workers itself.
            start_new_session=True,
        )
        self._procs[replica] = proc
        self._registry.mark_starting(replica, proc.pid, port)
        log.info("%s[%d]: started worker pid %d on port %d", model.name, replica.index,
                 proc.pid, port)  # fmt: skip
        try:
            error = await self._wait_ready(model, replica, proc)
            if error is None:
                self._registry.mark_ready(replica)
                log.info("%s[%d]: ready", model.name, replica.index)
                code: int | None = await self._watch(replica, proc)
                error_on_exit = None
            else:
                await self._reap(proc, _FAILED_EXIT_WAIT)
                error_on_exit = error
                code = proc.returncode
        finally:
            self._procs.pop(replica, None)
        log.warning("%s[%d]: worker pid %d exited (code %s)%s", model.name, replica.index,
                    proc.pid, code, f": {error_on_exit}" if error_on_exit else "")  # fmt: skip
        self._registry.mark_exited(replica, error_on_exit)
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
            if await self._status(replica.url, health.timeout):
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

    async def _wait_ready(
        self, model: ModelConfig, replica: Replica, proc: asyncio.subprocess.Process
    ) -> str | None:
        """Poll the worker's status until it is ready; return why not otherwise."""
        deadline = time.monotonic() + model.startup_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                return f"worker exited with code {proc.returncode} while loading"
            status = await self._status(replica.url)
            if status and status.get("state") in ("ready", "busy"):
                return None
            if status and status.get("state") == "failed":
                return str(status.get("error") or "the worker failed to load the model")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        return f"the model did not load within startup_timeout ({model.startup_timeout:g} s)"

    async def _status(self, url: str, timeout: float = 2.0) -> dict[str, Any] | None:
        assert self._session is not None
        try:
            async with self._session.get(url + "/status", timeout=_timeout(timeout)) as resp:
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
