"""Starting, pinning, probing and stopping the processes under test."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workers.wire import SECRET_ENV

__all__ = [
    "COMMANDS",
    "CONFIG_DIR",
    "LOG_DIR",
    "ROOT",
    "WORKER_SECRET",
    "Proc",
    "cpu_seconds",
    "free_port",
    "gateway_workers",
    "get_json",
    "pin",
    "rss_kib",
    "start",
    "start_gateway",
    "start_standin",
    "wait_http",
]

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(tempfile.gettempdir()) / "llm-gateway-bench"
CONFIG_DIR = ROOT / "bench" / "results" / "configs"  # generated configs, kept for the record
PYTHON = sys.executable
COMMANDS: list[str] = []  # every command the suite launched, for BENCHMARKS.md

# Every benchmarked gateway gives its workers this secret, so a "direct" target can call them.
WORKER_SECRET = "bench-worker-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """A launched process (its pid is the program's own: taskset execs it)."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    command: str
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(
    name: str,
    argv: list[str],
    port: int,
    cpus: str | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Launch `argv` (under `taskset -c cpus` when given), logging to LOG_DIR/name.log."""
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    command = shlex.join(argv).replace(str(ROOT) + "/", "")
    COMMANDS.append(command)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return Proc(name, popen, port, command, log)


def get_json(url: str, timeout: float = 5.0) -> Any:
    # The workers' secret: an admin key to the keyed gateways of scenario 8, ignored elsewhere.
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {WORKER_SECRET}"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_http(proc: Proc, path: str, timeout: float) -> float:
    """Poll GET path until it answers 200; return seconds since the process started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError, ValueError),
            urllib.request.urlopen(proc.url + path, timeout=2) as resp,
        ):
            if resp.status == 200:
                return time.monotonic() - proc.started
        time.sleep(0.02)
    raise TimeoutError(f"{proc.name} not ready on {path} within {timeout}s; see {proc.log}")


def start_gateway(
    name: str,
    models: list[dict[str, Any]],
    cpus: str | None,
    timeout: float = 120.0,
    extra: dict[str, Any] | None = None,
    recorded: bool = True,
) -> Proc:
    """Start `python -m gateway serve` on a generated config (plus `extra` top-level sections);
    return once /ready is 200. `recorded`: metrics and the request log on, as by default
    (the log to the gateway's log file, as JSON); off, neither (the cost they add)."""
    port = free_port()
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    config = CONFIG_DIR / f"{name}.yaml"
    server = {"host": "127.0.0.1", "port": port, "metrics": recorded}
    config.write_text(yaml.safe_dump({"server": server, "models": models, **(extra or {})}))
    logs = ["info", "--log-format", "json"] if recorded else ["warning"]
    argv = [
        PYTHON,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-level",
        *logs,
    ]
    # One known worker secret, so "direct" targets can call the workers (bench/common.py).
    proc = start(name, argv, port, cpus, env={SECRET_ENV: WORKER_SECRET})
    wait_http(proc, "/ready", timeout)
    return proc


def gateway_workers(gateway: Proc) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = get_json(gateway.url + "/admin/workers")["data"]
    return data


def start_standin(name: str, options: dict[str, Any], cpus: str | None) -> Proc:
    """A stand-in worker run by hand (`python -m workers --engine standin ...`)."""
    port = free_port()
    argv = [
        PYTHON,
        "-m",
        "workers",
        "--engine",
        "standin",
        "--model-name",
        "mock",
        "--port",
        str(port),
        "--standin-json",
        json.dumps(options),
    ]
    proc = start(name, argv, port, cpus)
    wait_http(proc, "/status", 30)
    return proc


def pin(pid: int, cpus: set[int]) -> None:
    """Pin a process and all its threads (sched_setaffinity applies per thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
