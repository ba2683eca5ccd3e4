"""Helpers for every test layer: ports, OpenAI schemas, SSE, a real gateway process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml

from workers.wire import SECRET_ENV

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "tests" / "data" / "openai-schemas.json"  # OpenAI's published schemas
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = REPO / "models" / "gemma-3-270m-q4_k_m.gguf"


CHAT = {"messages": [{"role": "user", "content": "hi"}]}
# Gateways under test give every worker this secret (not a random one), so tests can call them.
WORKER_SECRET = "test-worker-secret-0123456789"
WORKER_AUTH = {"Authorization": f"Bearer {WORKER_SECRET}"}


def api_key(name: str, key: str, **fields: Any) -> dict[str, Any]:
    """An auth.keys entry admitting `key` (by its hash, as the config requires)."""
    return {"name": name, "key_sha256": hashlib.sha256(key.encode()).hexdigest(), **fields}


def standin(
    name: str, replicas: int = 1, max_queue: int = 4, queue_timeout: float = 30, **options: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "engine": "standin",
        "replicas": replicas,
        "max_queue": max_queue,
        "queue_timeout": queue_timeout,
        "standin": {"token_delay": 0.01, "tokens": 8, **options},
    }


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert_valid("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    if code is not None:
        assert error["code"] == code
    return error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    document = json.loads(SCHEMAS.read_text())
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", **document})


def assert_valid(schema: str, body: Any) -> None:
    """Fail with every violation when `body` does not validate against OpenAI's `schema`."""
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator(schema).iter_errors(body)]
    assert not errors, f"{schema} violations: {errors}\nbody: {body}"


def assert_valid_completion_stream(chunks: list[dict[str, Any]]) -> None:
    """Completion chunks share CreateCompletionResponse's schema, but like api.openai.com we send
    `finish_reason: null` until the last chunk: no enum value means "not finished yet"."""
    for chunk in chunks[:-1]:
        assert all(c["finish_reason"] is None for c in chunk["choices"]), chunk
        assert_valid("CreateCompletionResponse", _with_finish_reason(chunk))
    assert_valid("CreateCompletionResponse", chunks[-1])


def _with_finish_reason(chunk: dict[str, Any]) -> dict[str, Any]:
    choices = [{**c, "finish_reason": "length"} for c in chunk["choices"]]
    return {**chunk, "choices": choices}


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes: it only waits to be reaped.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


JSON_LOG = ("--log-level", "info", "--log-format", "json")  # the request log, one JSON a line


class GatewayProcess:
    """The real gateway (`python -m gateway serve`) on a free loopback port, with its workers."""

    def __init__(
        self,
        config: dict[str, Any],
        folder: Path,
        api_key: str | None = None,
        log: tuple[str, ...] = ("--log-level", "warning"),
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = folder / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = folder / "gateway.log"
        self.api_key = api_key
        self.log_args = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 120.0, expect_ready: bool = True) -> GatewayProcess:
        command = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(self.config_path),
            "--port",
            str(self.port),
            *self.log_args,
        ]
        env = {**os.environ, SECRET_ENV: WORKER_SECRET}  # so tests may call workers directly
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        if expect_ready and not wait_until(self._ready, ready_timeout, 0.1):
            self.stop()
            raise AssertionError(f"gateway not ready in {ready_timeout} s:\n{self.log()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def workers(self) -> list[dict[str, Any]]:
        with self.client() as client:
            data: list[dict[str, Any]] = client.get("/admin/workers").json()["data"]
            return data

    def worker_status(self, model: str, index: int) -> dict[str, Any]:
        worker = next(w for w in self.workers() if w["model"] == model and w["replica"] == index)
        status: dict[str, Any] = httpx.get(
            worker["url"] + "/status", headers=WORKER_AUTH, timeout=5
        ).json()
        return status

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> int | None:
        """SIGTERM the gateway and wait; its workers must be gone too."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def running_gateway(config: dict[str, Any], folder: Path, **kw: Any) -> Iterator[GatewayProcess]:
    """Fixture body: start a gateway, yield it, stop it and check no worker outlived it."""
    gateway = GatewayProcess(config, folder, **kw).start()
    pids = [w["pid"] for w in gateway.workers() if w["pid"] is not None]
    try:
        yield gateway
    finally:
        gateway.stop()
        leftovers = [pid for pid in pids if not wait_until(lambda p=pid: not pid_alive(p), 10)]
        assert not leftovers, f"workers outlived the gateway: {leftovers}"
