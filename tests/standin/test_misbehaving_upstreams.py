"""Upstreams that fail or misbehave, against the real gateway process: one answering 500 to
everything is retried around and ejected; one streaming an event with no end, or declaring a
2 GiB answer, costs the gateway neither its CPU nor its memory.

Each fake upstream is a small aiohttp server in a thread of the test, passing its health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.standin.test_upstreams import NODE_KEY, RemoteWorker, upstream
from tests.support import (
    CHAT,
    GatewayProcess,
    assert_error,
    free_port,
    running_gateway,
    sse_data,
    wait_until,
)

gateway_of = contextlib.contextmanager(running_gateway)
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeUpstream:
    """An OpenAI-compatible server at /v1 whose chat completions `answer` makes; /health
    passes (a server answering 500 to every request may well be healthy by its checks)."""

    def __init__(self, answer: Answer) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.hits = 0
        self._answer = answer
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/health", _healthy)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        await request.read()
        return await self._answer(request)


async def _healthy(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def always_500(_: web.Request) -> web.Response:
    error = {"message": "internal error", "type": "server_error", "param": None, "code": None}
    return web.json_response({"error": error}, status=500)


async def endless_event(request: web.Request) -> web.StreamResponse:
    """An SSE stream whose first event never ends: 1 KiB a millisecond for 8 s, no blank line."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):  # the gateway hung up
        await response.write(b"data: ")
        for _ in range(8000):
            await response.write(b"x" * 1023 + b"\n")
            await asyncio.sleep(0.001)
    return response


async def declared_2_gib(request: web.Request) -> web.StreamResponse:
    """An answer declaring 2 GiB: 256 MiB of it as fast as the gateway takes it, then silence."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 2 << 30
    await response.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):  # the gateway hung up
        for _ in range(256):
            await response.write(b" " * (1 << 20))
        await asyncio.sleep(10)
    return response


def cpu_seconds(pid: int) -> float:
    """The CPU time process `pid` has used, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    """The most memory process `pid` has held at once (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def ask(gateway: GatewayProcess, stream: bool) -> httpx.Response:
    with gateway.client(timeout=30) as client:
        return client.post("/v1/chat/completions", json={"model": "m", "stream": stream, **CHAT})


def scrape(gateway: GatewayProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(gateway.url + "/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_an_upstream_answering_500_is_retried_elsewhere_then_ejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, good = FakeUpstream(always_500), RemoteWorker("m").start()
    monkeypatch.setenv("NODE_KEY", NODE_KEY)
    # The failing one first: between two free replicas, the lower number is picked.
    config = {"models": [{"name": "m", "upstreams": [{"url": bad.url}, upstream(good.url)]}]}
    try:
        with gateway_of(config, tmp_path) as gateway:
            assert wait_until(lambda: all(w["state"] == "ready" for w in gateway.workers()), 15)
            answers = [ask(gateway, stream=i % 2 == 1) for i in range(20)]
            workers = {w["replica"]: w for w in gateway.workers()}
            samples = scrape(gateway)
    finally:
        good.kill()
    assert [a.status_code for a in answers] == [200] * 20, answers[0].text
    assert all(sse_data(a.text)[-1] == "[DONE]" for a in answers[1::2])  # streams too
    assert bad.hits == 5  # 5 failed answers in a row, then out of rotation
    assert workers[0]["state"] == "ejected" and workers[0]["ejections"] == 1
    assert workers[0]["ejected_until"] > time.time() + 20  # 30 s the first time
    assert workers[1]["state"] == "ready"
    labels = {"model": "m", "replica": "0"}
    assert samples[("llm_gateway_replica_ejections_total", frozenset(labels.items()))] == 1
    state = frozenset({**labels, "state": "ejected"}.items())
    assert samples[("llm_gateway_replica_state", state)] == 1


def test_a_stream_with_no_blank_line_ends_with_an_error_event_at_little_cpu(
    tmp_path: Path,
) -> None:
    fake = FakeUpstream(endless_event)
    config = {
        "server": {"max_upstream_bytes": 1 << 20},
        "models": [{"name": "m", "upstreams": [{"url": fake.url}]}],
    }
    with gateway_of(config, tmp_path) as gateway:
        assert gateway.proc is not None
        before = cpu_seconds(gateway.proc.pid)
        answer = ask(gateway, stream=True)
        used = cpu_seconds(gateway.proc.pid) - before
    assert answer.status_code == 200
    error = json.loads(sse_data(answer.text)[-1])["error"]
    assert error["code"] == "upstream_too_large", answer.text[-300:]
    assert len(answer.content) < 1000  # nothing of the endless event reached the client
    # 1 MiB read once; re-reading all that was pending for every piece pinned a core for 8 s.
    assert used < 1.5, f"{used:.2f} s of CPU"


def test_an_answer_declaring_2_gib_is_a_502_and_never_buffered(tmp_path: Path) -> None:
    fake = FakeUpstream(declared_2_gib)
    config = {"models": [{"name": "m", "upstreams": [{"url": fake.url}], "idle_timeout": 3}]}
    with gateway_of(config, tmp_path) as gateway:
        assert gateway.proc is not None
        before = peak_rss(gateway.proc.pid)
        began = time.monotonic()
        answer = ask(gateway, stream=False)
        took = time.monotonic() - began
        grown = peak_rss(gateway.proc.pid) - before
    assert_error(answer, 502, "upstream_too_large")
    assert took < 2  # refused by its Content-Length, not after reading for the idle timeout
    assert grown < 32 << 20, f"peak RSS grew {grown >> 20} MiB"
