"""Worker-specific test helpers; the shared ones (ports, schemas, SSE) live in tests.support."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from tests.support import REPO, assert_valid, free_port

__all__ = ["WorkerProcess", "assert_valid_completion_chunk"]


def assert_valid_completion_chunk(chunk: dict[str, Any]) -> None:
    """A streamed completion chunk is valid but for `finish_reason: null` before a choice's
    last chunk (what api.openai.com sends; the schema's enum has no "not finished yet")."""
    choices = [{**c, "finish_reason": c["finish_reason"] or "length"} for c in chunk["choices"]]
    assert_valid("CreateCompletionResponse", {**chunk, "choices": choices})


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
            cwd=REPO,
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
