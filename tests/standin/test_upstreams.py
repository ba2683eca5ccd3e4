"""Remote replicas: a model served by local workers and by OpenAI-compatible servers elsewhere.

The "remote host" is a real `llm-gateway worker` process on another loopback port (what ops run
on a second machine), and, to see exactly what the gateway sends, a small recording OpenAI
server under a path prefix of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from tests.support import (
    REPO,
    GatewayProcess,
    free_port,
    running_gateway,
    standin,
    wait_until,
)
from workers.wire import SECRET_ENV

NODE_KEY = "node-key-0123456789abcdef"


class RemoteWorker:
    """`llm-gateway worker` on its own port, as on another host, requiring NODE_KEY."""

    def __init__(
        self, name: str, host: str = "127.0.0.1", port: int | None = None, **standin_options: Any
    ) -> None:
        self.host, self.port, self.name = host, port or free_port(), name
        self.options = {"token_delay": 0.01, "tokens": 8, **standin_options}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> RemoteWorker:
        command = [
            sys.executable,
            "-m",
            "gateway",
            "worker",
            "--model-name",
            self.name,
            "--engine",
            "standin",
            "--standin-json",
            json.dumps(self.options),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        env = {**os.environ, SECRET_ENV: NODE_KEY}
        self.proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        health = f"http://{self.host}:{self.port}/health"
        auth = {"Authorization": f"Bearer {NODE_KEY}"}
        assert wait_until(lambda: _status(health, auth) == 200, 30), "remote worker not ready"
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def _status(url: str, headers: dict[str, str]) -> int:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture
def remote() -> Iterator[RemoteWorker]:
    worker = RemoteWorker("m-there", token_delay=0.05).start()  # 0.4 s an answer
    try:
        yield worker
    finally:
        worker.kill()


gateway_of = contextlib.contextmanager(running_gateway)


def upstream(url: str, **fields: Any) -> dict[str, Any]:
    return {"url": url, "api_key_env": "NODE_KEY", **fields}


@pytest.fixture
def mixed(
    remote: RemoteWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayProcess]:
    monkeypatch.setenv("NODE_KEY", NODE_KEY)
    config = {
        "models": [
            {
                **standin("m", max_queue=64),
                "upstreams": [upstream(remote.url, capacity=2, upstream_model="m-there")],
            },
            {"name": "only-remote", "upstreams": [upstream(remote.url)]},
        ]
    }
    yield from running_gateway(config, tmp_path)


def chat(gateway: GatewayProcess, model: str = "m") -> str:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    return answer.choices[0].message.content or ""


def test_a_pool_mixes_a_local_worker_and_a_remote_server(
    mixed: GatewayProcess, remote: RemoteWorker
) -> None:
    workers = {(w["model"], w["replica"]): w for w in mixed.workers()}
    local, there = workers[("m", 0)], workers[("m", 1)]
    assert (local["kind"], there["kind"]) == ("local", "remote")
    assert there["api"] == remote.url and there["pid"] is None
    assert wait_until(lambda: all(w["state"] == "ready" for w in mixed.workers()), 10)
    with ThreadPoolExecutor(6) as pool:  # capacity 1 here + 2 there: both take requests
        answers = list(pool.map(lambda _: chat(mixed), range(12)))
    assert all(answers)
    served = {(w["model"], w["replica"]): w["requests_served"] for w in mixed.workers()}
    assert served[("m", 0)] > 0 and served[("m", 1)] > 0
    assert chat(mixed, "only-remote")  # a model with no local replica at all


def test_a_remote_killed_under_load_fails_no_request_then_leaves_and_returns(
    mixed: GatewayProcess, remote: RemoteWorker
) -> None:
    assert wait_until(lambda: all(w["state"] == "ready" for w in mixed.workers()), 10)

    def there() -> dict[str, Any]:
        return next(w for w in mixed.workers() if w["replica"] == 1)

    with ThreadPoolExecutor(6) as pool:
        answers = pool.map(lambda _: chat(mixed), range(12))
        assert wait_until(lambda: there()["in_flight"] > 0, 5)
        remote.kill()  # mid-answer: nothing was sent to those clients yet, so they are retried
        assert all(answers)  # on the local replica: no client sees a failure
    assert there()["state"] == "unhealthy"
    remote.start()  # the same port: the health check lets it back in
    assert wait_until(lambda: there()["state"] == "ready", 15)
    assert chat(mixed, "only-remote")


class Recorder:
    """A minimal OpenAI server under /openai/v1 (no /health) that notes what it was sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(10)

    def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/openai/v1/models", self._models)
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _models(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path, "auth": request.headers.get("Authorization")})
        return web.json_response({"object": "list", "data": []})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(
            {"path": request.path, "auth": request.headers.get("Authorization"), "body": body}
        )
        message = {"role": "assistant", "content": "recorded", "refusal": None}
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def test_the_url_s_path_the_upstream_s_name_and_its_key_are_what_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setenv("NODE_KEY", NODE_KEY)
    url = f"http://127.0.0.1:{recorder.port}/openai/v1"
    config = {"models": [{"name": "ours", "upstreams": [upstream(url, upstream_model="theirs")]}]}
    with gateway_of(config, tmp_path) as gateway:
        assert chat(gateway, "ours") == "recorded"
    checks = [s for s in recorder.seen if "body" not in s]
    sent = [s for s in recorder.seen if "body" in s]
    # No /health there (404): the API's model list is the health check.
    assert checks and checks[0] == {"path": "/openai/v1/models", "auth": f"Bearer {NODE_KEY}"}
    assert [s["path"] for s in sent] == ["/openai/v1/chat/completions"]
    assert sent[0]["auth"] == f"Bearer {NODE_KEY}"
    assert sent[0]["body"]["model"] == "theirs"  # only that field is rewritten
    assert sent[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]


def test_a_dns_name_s_addresses_are_the_replicas_and_follow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two "pods" on the same port at two loopback addresses, as a headless Service's records.
    port = free_port()
    pods = [RemoteWorker(f"pod{i}", host=f"127.0.0.{i}", port=port).start() for i in (2, 3)]
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 workers.test\n127.0.0.3 workers.test  # both pods\n")
    monkeypatch.setenv("NODE_KEY", NODE_KEY)
    entry = {
        "dns": f"workers.test:{port}",
        "resolve_every": 0.2,
        "hosts_file": str(hosts),
        "api_key_env": "NODE_KEY",
        "capacity": 2,
    }
    config = {"models": [{"name": "m", "upstreams": [entry]}]}
    try:
        with gateway_of(config, tmp_path) as gateway:

            def apis() -> set[str]:
                return {w["api"] for w in gateway.workers() if w["state"] == "ready"}

            both = {f"http://127.0.0.{i}:{port}/v1" for i in (2, 3)}
            assert wait_until(lambda: apis() == both, 10)
            with ThreadPoolExecutor(4) as pool:
                assert all(pool.map(lambda _: chat(gateway), range(8)))
            hosts.write_text("127.0.0.2 workers.test\n")  # a pod went away: drains and leaves
            assert wait_until(
                lambda: [w["api"] for w in gateway.workers()] == [f"http://127.0.0.2:{port}/v1"], 10
            )
            assert chat(gateway)
            hosts.write_text("127.0.0.2 workers.test\n127.0.0.3 workers.test\n")  # it is back
            assert wait_until(lambda: apis() == both, 10)
    finally:
        for pod in pods:
            pod.kill()
