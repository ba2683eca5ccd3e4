"""Clients are told what they can act on, never the gateway's internals: an upstream's address, a
load error, their own megabyte echoed back. The detail goes to the log, with the request id."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.standin.test_upstreams import NODE_KEY, RemoteWorker, gateway_of, upstream
from tests.support import (
    CHAT,
    GatewayProcess,
    assert_error,
    free_port,
    standin,
    wait_until,
)


def test_an_unreachable_upstream_s_address_stays_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_KEY", NODE_KEY)
    remote = RemoteWorker("far-there").start()
    twice = [upstream(remote.url), upstream(remote.url.replace("127.0.0.1", "localhost"))]
    config = {
        "health": {"interval": 60},  # the gateway must not notice before the request
        "models": [{"name": "far", "upstreams": twice}],
    }
    with gateway_of(config, tmp_path) as gateway:
        assert wait_until(lambda: all(w["state"] == "ready" for w in gateway.workers()), 10)
        remote.kill()  # the request fails on one, then on the other: a 502
        answer = httpx.post(
            gateway.url + "/v1/chat/completions", json={"model": "far", **CHAT}, timeout=30
        )
        error = assert_error(answer, 502)
        assert str(remote.port) not in error["message"], error
        logged = gateway.log_path.read_text()
        assert answer.headers["x-request-id"] in logged and str(remote.port) in logged


def test_a_model_whose_upstream_is_down_says_so_without_its_address(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = {
        "health": {"interval": 0.2},
        "models": [{"name": "down", "upstreams": [{"url": f"http://127.0.0.1:{port}/v1"}]}],
    }
    gateway = GatewayProcess(config, tmp_path).start(expect_ready=False)
    try:
        assert wait_until(lambda: _error_of(gateway) is not None, 20)
        answer = httpx.post(
            gateway.url + "/v1/chat/completions", json={"model": "down", **CHAT}, timeout=30
        )
        error = assert_error(answer, 503, "model_unavailable")
        assert str(port) not in error["message"] and "/admin/workers" in error["message"]
        assert str(port) in gateway.workers()[0]["error"]  # an admin sees it
    finally:
        gateway.stop()


def test_a_huge_model_name_is_not_echoed(tmp_path: Path) -> None:
    with gateway_of({"models": [standin("m")]}, tmp_path) as gateway:
        name = "x" * (1 << 20)
        answer = httpx.post(
            gateway.url + "/v1/chat/completions", json={"model": name, **CHAT}, timeout=30
        )
        error = assert_error(answer, 404, "model_not_found")
        assert len(error["message"]) < 300 and "'xxx" in error["message"]


def _error_of(gateway: GatewayProcess) -> str | None:
    """The first replica's error, once the gateway answers."""
    try:
        error: str | None = gateway.workers()[0]["error"]
    except httpx.HTTPError:
        return None
    return error
