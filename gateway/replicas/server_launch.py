"""Starting llama.cpp's `llama-server` as a replica (`engine: llama-server`), and how its start-up
ends; the same interface as launch.Launch, so the local driver runs both alike.

It gets the model's settings as flags (gateway/config/llama_server.py), a loopback port chosen
just before it starts (it binds the port itself: a port taken meanwhile is a failed start, which
the restart loop retries on another), the worker secret as its API key (in its environment, so
`ps` does not show it) and the GPUs of its slot. It is ready once `/health` answers 200 (503
while it loads). Its output is read all along into a small tail (a pipe left unread would block
it once full): the last lines say why it failed. It has no `--parent-pid` as our worker does, so
on Linux the kernel sends it SIGTERM when the gateway dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from ..config.file import ModelConfig
from ..config.llama_server import SERVER_FLAGS
from .footprint import DEFAULT_N_CTX
from .launch import Status, describe_exit, listening_socket, llama_params, worker_env, worker_secret
from .server_metrics import engine_counters

__all__ = ["API_KEY_ENV", "ServerLaunch", "server_command", "spawn_server"]

API_KEY_ENV = "LLAMA_API_KEY"  # llama-server's --api-key, read from its environment
_TAIL_BYTES = 4096
_TAIL_LINES = 5
_POLL = 0.1  # seconds between two /health polls while it loads
_POLL_TIMEOUT = 5.0  # the most one poll waits (a process that exits meanwhile is noticed)
_MEAN_POOLING = 1  # decoder GGUFs set no pooling; OpenAI's embeddings are one vector per input
_LOAD_MODES = {
    (True, False): "mmap",
    (False, False): "none",
    (False, True): "mlock",
    (True, True): "mmap+mlock",
}
_PR_SET_PDEATHSIG = 1


def server_command(model: ModelConfig, port: int | str, device: str = "cpu") -> list[str]:
    """llama-server's command line for a replica of `model` on `device`: `capacity` slots of
    `n_ctx` each (split KV, unless `kv_unified`), then the model's `server_args`."""
    assert model.server_binary is not None and model.path is not None
    params = llama_params(model, device)
    n_ctx = params.pop("n_ctx", DEFAULT_N_CTX)
    params.setdefault("kv_unified", False)
    if params.get("embedding"):
        params.setdefault("pooling_type", _MEAN_POOLING)
    load = (params.pop("use_mmap", True), params.pop("use_mlock", False))
    command = [
        str(model.server_binary),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics",
        "--no-webui",
        "-a",
        model.name,
        "-m",
        str(model.path),
        "-np",
        str(model.capacity),
        "-c",
        str(n_ctx * model.capacity),
        # No prompt cache in RAM beside the slots' (8 GiB by default): a replica's
        # memory stays what its estimate and the budgets count.
        "--cache-ram",
        "0",
    ]
    if load != (True, False):
        command += ["-lm", _LOAD_MODES[load]]
    for key, value in params.items():
        command += SERVER_FLAGS[key](value) or []
    return [*command, *model.server_args]


def slot_context(model: ModelConfig) -> int:
    """The context one request gets: a slot's."""
    return int(model.llama.get("n_ctx", DEFAULT_N_CTX))


async def spawn_server(
    model: ModelConfig, index: int, device: str, session: aiohttp.ClientSession
) -> ServerLaunch:
    """Start llama-server for replica `index` of `model` on `device`, on a free loopback port."""
    with listening_socket() as sock:
        port: int = sock.getsockname()[1]
    secret = worker_secret(os.environ)
    env = {**worker_env(device, dict(os.environ)), API_KEY_ENV: secret}
    proc = await asyncio.create_subprocess_exec(
        *server_command(model, port, device),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # as our workers: the gateway drains, then stops it itself
        preexec_fn=_dies_with(os.getpid()),
    )
    return ServerLaunch(proc, port, secret, session, slot_context(model))


@dataclass(eq=False)
class ServerLaunch:
    """One started llama-server and the tail of its output."""

    proc: asyncio.subprocess.Process
    port: int
    secret: str
    _session: aiohttp.ClientSession
    _n_ctx: int
    _output: _Tail = field(init=False)
    # Not our worker: no /requests/ID/done, usage in OpenAI's fields (registry.Replica).
    our_worker: ClassVar[bool] = False

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None
        self._output = _Tail(self.proc.stdout)

    async def until_ready(self, timeout: float) -> str | None:
        """None once /health answers 200; otherwise why it never will."""
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            async with asyncio.timeout(timeout):
                while not await self._healthy(_POLL_TIMEOUT):
                    if (await asyncio.wait((exited,), timeout=_POLL))[0]:
                        return await self._failure()
        except TimeoutError:
            return f"the model did not load within startup_timeout ({timeout:g} s)"
        finally:
            if not exited.done():
                exited.cancel()
        return None

    async def status(self, session: aiohttp.ClientSession, timeout: float) -> Status | None:
        """/health, then /metrics as our counters, within `timeout` seconds; None if either
        does not answer."""
        try:
            async with asyncio.timeout(timeout):
                if not await self._healthy(timeout, session):
                    return None
                text = await self._get("/metrics", session)
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            return None
        return Status(engine_counters(text), self._n_ctx)

    def tail(self) -> str:
        return self._output.lines()

    def close(self) -> None:
        """Nothing to close: its output is read until it exits (a pipe unread would block it)."""

    async def _healthy(self, timeout: float, session: aiohttp.ClientSession | None = None) -> bool:
        try:
            await self._get("/health", session or self._session, timeout)
        except (aiohttp.ClientError, TimeoutError):
            return False
        return True

    async def _get(
        self, path: str, session: aiohttp.ClientSession, timeout: float | None = None
    ) -> str:
        """The text of a 200 answer to GET `path`; ClientResponseError for another status."""
        url = f"http://127.0.0.1:{self.port}{path}"
        headers = {"Authorization": f"Bearer {self.secret}"}
        limit = aiohttp.ClientTimeout(total=timeout)
        async with session.get(url, headers=headers, timeout=limit) as resp:
            resp.raise_for_status()
            return await resp.text()

    async def _failure(self) -> str:
        """Why it exited before it was ready: how, and its last words."""
        await self._output.finished()
        returncode = self.proc.returncode
        how = describe_exit(returncode)
        verb = "crashed" if returncode is not None and returncode < 0 else "exited"
        said = self._output.lines()
        return f"llama-server {verb} while loading the model ({how})" + (
            f": {said}" if said else ""
        )


class _Tail:
    """Reads a process's output to its end, keeping the last _TAIL_BYTES of it."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._kept = b""
        self._reading = asyncio.ensure_future(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self._kept = (self._kept + chunk)[-_TAIL_BYTES:]

    async def finished(self, within: float = 1.0) -> None:
        """Wait (a little) for the end of the output of a process that exited."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reading), within)

    def lines(self) -> str:
        text = self._kept.decode(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-_TAIL_LINES:] if line.strip())


def _dies_with(parent: int) -> Callable[[], Any] | None:
    """Run in the child before it execs (Linux only): SIGTERM to it when `parent` dies; exit
    at once if `parent` died already."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm
