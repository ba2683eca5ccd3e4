"""Starting one worker process, and how its start-up ends: ready, failed (with why), or dead.

A worker writes each lifecycle change (`loading`, `warming_up`, `ready`, `failed REASON`) as one
line to a pipe the gateway hands it. Reading that pipe, rather than polling `/status`, learns of
readiness at once and names the phase a worker crashed in: a crash during warm-up is what a
broken CPU build of llama.cpp looks like (see docs/builds.md "CPU builds").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import aiohttp

from workers.wire import SECRET_ENV

from ..config.file import ModelConfig

__all__ = [
    "Launch",
    "Spare",
    "Status",
    "crash_reason",
    "describe_exit",
    "listening_socket",
    "llama_params",
    "spawn",
    "worker_command",
    "worker_env",
    "worker_secret",
]

# Signals by which native code dies when a build does not fit the CPU (or reads a bad address).
_NATIVE_CRASHES = {signal.SIGSEGV, signal.SIGILL, signal.SIGBUS}
CPU_BUILDS_HINT = "see docs/builds.md"


def llama_params(model: ModelConfig, device: str = "cpu") -> dict[str, Any]:
    """The Llama kwargs a replica on `device` gets: one on CUDA GPUs offloads every layer by
    default, one without none unless told (`n_gpu_layers` with Metal, on a Mac)."""
    params = dict(model.llama)
    params.setdefault("n_gpu_layers", 0 if device == "cpu" else -1)
    return params


def worker_command(
    model: ModelConfig,
    port: int,
    parent_pid: int,
    phase_fd: int | None = None,
    *,
    replica: int,
    device: str = "cpu",
    listen_fd: int | None = None,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "workers",
        "--model-name",
        model.name,
        "--replica",
        str(replica),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--engine",
        model.engine,
        "--parent-pid",
        str(parent_pid),
    ]
    if phase_fd is not None:
        command += ["--phase-fd", str(phase_fd)]
    if listen_fd is not None:
        command += ["--listen-fd", str(listen_fd)]
    if model.path is not None:
        command += ["--model-path", str(model.path)]
    command += ["--matryoshka"] if model.matryoshka else []
    command += ["--accept-token-ids"] if model.accept_token_ids else []
    if model.engine == "llama":
        command += ["--llama-json", json.dumps(llama_params(model, device))]
    else:
        command += ["--standin-json", json.dumps(dict(model.standin))]
    return [*command, "--concurrency", str(model.capacity)]


def worker_env(device: str, base: dict[str, str]) -> dict[str, str]:
    """The worker's environment on `device` ("cpu", or GPU ids as CUDA_VISIBLE_DEVICES lists
    them): CPU replicas see no GPU at all, so a CUDA build cannot grab one."""
    return {**base, "CUDA_VISIBLE_DEVICES": "" if device == "cpu" else device}


def listening_socket() -> socket.socket:
    """A loopback socket on a free port, listening: handed to a worker, it keeps the port
    from the moment it is chosen (a port merely found free may be taken by any connect()
    before the worker binds it)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def worker_secret(environ: Mapping[str, str]) -> str:
    """The secret a new worker requires: a fresh random one, unless the gateway itself was given
    one in LLM_GATEWAY_WORKER_SECRET (to reach workers directly: debugging, benchmarks)."""
    return environ.get(SECRET_ENV) or secrets.token_urlsafe(32)


def describe_exit(returncode: int | None) -> str:
    """How a process ended, for people: "exit code 3" or "SIGSEGV, signal 11"."""
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "unknown signal"
    return f"{name}, signal {-returncode}"


def crash_reason(phase: str, returncode: int) -> str:
    """Why a worker that died before it was ready is a failed replica."""
    how = describe_exit(returncode)
    crashed = returncode < 0
    hint = f" - {CPU_BUILDS_HINT}" if crashed and -returncode in _NATIVE_CRASHES else ""
    verb = "crashed" if crashed else "exited"
    where = "during warm-up" if phase == "warming_up" else "while loading the model"
    return f"worker {verb} {where} ({how}){hint}"


class Status(NamedTuple):
    """What a status check learns of a replica: its engine's counters (our names, see
    gateway/observe/metrics.py) and the context one request gets, where known."""

    engine: dict[str, float]
    n_ctx: int | None


@dataclass(eq=False)
class Launch:
    """One started worker process and the read end of its phase pipe."""

    proc: asyncio.subprocess.Process
    port: int
    secret: str  # the worker serves only requests that carry it
    _phases: asyncio.StreamReader
    _transport: asyncio.BaseTransport
    phase: str = field(default="loading")
    # Our worker: it reports each request's end and its usage its own way (registry.Replica).
    our_worker: ClassVar[bool] = True

    async def until_ready(self, timeout: float) -> str | None:
        """None once the worker says ready; otherwise why it never will."""
        try:
            async with asyncio.timeout(timeout):
                while line := await self._phases.readline():
                    phase, _, detail = line.decode(errors="replace").strip().partition(" ")
                    if phase == "ready":
                        return None
                    if phase == "failed":
                        return detail or "the worker failed to load the model"
                    self.phase = phase
                # End of the pipe: the worker is gone (or closing).
                return crash_reason(self.phase, await self.proc.wait())
        except TimeoutError:
            return f"the model did not load within startup_timeout ({timeout:g} s)"

    async def status(self, session: aiohttp.ClientSession, timeout: float) -> Status | None:
        """Its /status within `timeout` seconds; None if it does not answer."""
        url = f"http://127.0.0.1:{self.port}/status"
        headers = {"Authorization": f"Bearer {self.secret}"}
        limit = aiohttp.ClientTimeout(total=timeout)
        try:
            async with session.get(url, headers=headers, timeout=limit) as resp:
                resp.raise_for_status()
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        context = body.get("n_ctx") if isinstance(body, dict) else None
        return Status(_engine_counters(body), context if _positive(context) else None)

    def tail(self) -> str:
        """Its last output lines: none kept (a worker writes to the gateway's own stderr)."""
        return ""

    def close(self) -> None:
        self._transport.close()


def _engine_counters(status: Any) -> dict[str, float]:
    """The numbers of a worker's /status `batching` (absent for an embedding model)."""
    counters = status.get("batching") if isinstance(status, dict) else None
    if not isinstance(counters, dict):
        return {}
    return {
        key: float(value)
        for key, value in counters.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


async def spawn(
    model: ModelConfig, index: int, device: str = "cpu", spare: Spare | None = None
) -> Launch:
    """Start a worker for replica `index` of `model` on `device`, on a fresh loopback port; on
    the CPU, by handing `spare` its arguments where one is given and alive."""
    if spare is not None and device == "cpu" and spare.alive:
        return await spare.assign(model, index)
    sock, secret = listening_socket(), worker_secret(os.environ)
    port: int = sock.getsockname()[1]
    read_fd, write_fd = os.pipe()
    command = worker_command(
        model, port, os.getpid(), write_fd, replica=index, device=device, listen_fd=sock.fileno()
    )
    env = {**worker_env(device, dict(os.environ)), SECRET_ENV: secret}
    proc = await _start(command, env, sock, read_fd, write_fd, asyncio.subprocess.DEVNULL)
    return Launch(proc, port, secret, *await _phase_reader(read_fd))


class Spare:
    """A worker process started ahead of need (workers/standby.py): its imports done, its port
    bound, it waits for a replica's arguments on stdin. CPU replicas only."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        port: int,
        fds: tuple[int, int],
        phases: tuple[asyncio.StreamReader, asyncio.BaseTransport],
    ) -> None:
        self.proc, self.port, self._fds, self._phases = proc, port, fds, phases

    @classmethod
    async def start(cls) -> Spare:
        sock = listening_socket()
        port: int = sock.getsockname()[1]
        read_fd, write_fd = os.pipe()
        fds = (write_fd, sock.fileno())  # their numbers in the worker, for its arguments later
        command = [sys.executable, "-m", "workers", "--standby"]
        env = worker_env("cpu", dict(os.environ))
        proc = await _start(command, env, sock, read_fd, write_fd, asyncio.subprocess.PIPE)
        return cls(proc, port, fds, await _phase_reader(read_fd))

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def assign(self, model: ModelConfig, index: int) -> Launch:
        """Make it replica `index` of `model`: it loads the model from here on."""
        secret = worker_secret(os.environ)
        command = worker_command(
            model, self.port, os.getpid(), self._fds[0], replica=index, listen_fd=self._fds[1]
        )
        argv = command[3:]  # what follows `python -m workers`
        order = {"argv": argv, "env": {SECRET_ENV: secret}}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(order).encode() + b"\n")
        await self.proc.stdin.drain()
        self.proc.stdin.close()
        return Launch(self.proc, self.port, secret, *self._phases)

    async def close(self) -> None:
        """Not needed after all: closing its stdin ends it."""
        self._phases[1].close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


async def _start(
    command: list[str],
    env: dict[str, str],
    sock: socket.socket,
    read_fd: int,
    write_fd: int,
    stdin: int,
) -> asyncio.subprocess.Process:
    """Start a worker process holding `sock` and the write end of its phase pipe (only it: its
    exit ends the pipe); this process keeps the read end."""
    try:
        return await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=stdin,
            pass_fds=(write_fd, sock.fileno()),
            # Its own session: a Ctrl-C or a signal to the gateway's process group must not stop
            # a worker mid-request; the gateway drains, then stops its workers itself.
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
        sock.close()


async def _phase_reader(read_fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    return reader, transport
