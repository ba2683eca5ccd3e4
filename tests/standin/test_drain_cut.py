"""A drain that runs out of time (issue 24: `docker stop` during a long stream): what it could not
finish ends with an error its client can read, never a silent cut, and the process stops
cleanly: exit 0, its workers stopped, its Redis heartbeat gone."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.support import (
    CHAT,
    GatewayProcess,
    assert_error,
    pid_alive,
    sse_data,
    standin,
    wait_until,
)

REDIS = "redis://127.0.0.1:6379/7"  # the machine's Redis (.ci/run starts one); this test's db


def in_background(gateway: GatewayProcess, stream: bool) -> dict[str, Any]:
    """Send a chat request on a thread; its answer lands in the dict returned (`thread` joins)."""
    result: dict[str, Any] = {}

    def run() -> None:
        with gateway.client() as client:
            body = {"model": "m", "stream": stream, **CHAT}
            result["response"] = client.post("/v1/chat/completions", json=body)

    result["thread"] = threading.Thread(target=run)
    result["thread"].start()
    return result


def admin(gateway: GatewayProcess, path: str) -> Any:
    with gateway.client() as client:
        return client.get(path).json()


def test_a_stream_longer_than_the_drain_ends_with_an_error_event_and_the_gateway_exits_0(
    tmp_path: Path,
) -> None:
    # 400 tokens 50 ms apart: 20 s of stream against a 1 s drain; one replica serving one at a time.
    model = {**standin("m", token_delay=0.05, tokens=400), "capacity": 1}
    config = {"server": {"drain_timeout": 1}, "redis": {"url": REDIS}, "models": [model]}
    gateway = GatewayProcess(config, tmp_path, log=("--log-level", "info")).start()
    assert gateway.proc is not None
    heartbeat = f"llmgw:gateway:{admin(gateway, '/admin/gateways')['data'][0]['id']}"
    pids = [w["pid"] for w in gateway.workers()]
    streaming = in_background(gateway, stream=True)
    assert wait_until(lambda: any(w["in_flight"] for w in gateway.workers()), 5)
    queued = in_background(gateway, stream=False)  # waits for the one replica
    assert wait_until(lambda: admin(gateway, "/admin/workers")["queued"] == {"m": 1}, 5)
    with redis.Redis.from_url(REDIS) as client:
        assert client.exists(heartbeat)

    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(15) == 0

    streaming["thread"].join(5)
    queued["thread"].join(5)
    stream: httpx.Response = streaming["response"]
    events = sse_data(stream.text)
    assert stream.status_code == 200 and len(events) > 2  # tokens came, then the drain ran out
    error = json.loads(events[-1])["error"]
    assert error["code"] == "shutting_down" and "drain_timeout" in error["message"]
    assert "[DONE]" not in events and 'finish_reason": "stop' not in stream.text
    assert_error(queued["response"], 503, "shutting_down")
    assert "drain timeout: 1 queued requests refused, 1 streams ended" in gateway.log()
    assert not any(pid_alive(pid) for pid in pids)
    with redis.Redis.from_url(REDIS) as client:
        assert not client.exists(heartbeat)
