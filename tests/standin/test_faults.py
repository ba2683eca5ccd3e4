"""Faults injected into real processes: killed, hung and unloadable workers; SIGTERM drain."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    CHAT,
    GatewayProcess,
    assert_error,
    pid_alive,
    sse_data,
    standin,
    wait_until,
)

FAST_HEALTH = {"interval": 0.3, "timeout": 0.3, "failures": 2}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("faults")
    garbage = folder / "broken.gguf"
    garbage.write_bytes(b"this is not a GGUF file" * 100)
    config = {
        "health": FAST_HEALTH,
        "models": [
            standin("pair", replicas=2, max_queue=64, token_delay=0.02, tokens=30),
            {**standin("frozen", token_delay=0.05, tokens=100), "idle_timeout": 1.0},
            {
                **standin("slowpoke", token_delay=1.0, tokens=3),
                "first_token_timeout": 0.4,
                "idle_timeout": 0.4,
            },
            {"name": "broken", "path": str(garbage), "llama": {"n_ctx": 256}},
            standin("segv-warmup", crash_on_warmup=True),
            standin("slow-broken", fail_load="no such tensor", load_seconds=1.5),
            standin("prefill", replicas=2, prefill_seconds=3, tokens=2),
            {
                **standin("firehose", token_delay=0, tokens=10_000_000, n_ctx=100_000_000),
                "idle_timeout": 1.0,
            },
            {**standin("segv-request", crash_on_request=True), "queue_timeout": 10},
        ],
    }
    # At info: the supervisor's "started worker" lines time the restarts' backoff.
    gateway = GatewayProcess(config, folder, log=("--log-level", "info"))
    gateway.start(expect_ready=False)
    try:
        assert wait_until(lambda: ready_replicas(gateway) == 8, 30), gateway.log()
        yield gateway
    finally:
        gateway.stop()


def ready_replicas(gateway: GatewayProcess) -> int:
    assert gateway.proc is not None and gateway.proc.poll() is None, gateway.log()
    try:
        return sum(w["state"] == "ready" for w in gateway.workers())
    except httpx.HTTPError:
        return 0


def replicas_of(gateway: GatewayProcess, model: str) -> list[dict[str, Any]]:
    return [w for w in gateway.workers() if w["model"] == model]


def ask(gateway: GatewayProcess, model: str, stream: bool) -> tuple[int, str]:
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", json={"model": model, "stream": stream, **CHAT}
        )
        return response.status_code, response.text


def test_killing_one_of_two_replicas_under_load_fails_no_plain_request(
    gateway: GatewayProcess,
) -> None:
    victim = replicas_of(gateway, "pair")[0]["pid"]
    timer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
    timer.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda i: (i % 2 == 0, ask(gateway, "pair", i % 2 == 0)), range(20))
        )
    timer.join()
    for stream, (status, text) in results:
        if not stream:
            assert status == 200, text  # retried on the other replica
            continue
        events = sse_data(text) if status == 200 else []
        if events and events[-1] == "[DONE]":
            continue
        assert status >= 500 or "error" in json.loads(events[-1]), text
    assert wait_until(lambda: [w["restarts"] for w in replicas_of(gateway, "pair")] == [1, 0], 10)


def test_a_hung_worker_is_taken_out_killed_and_restarted(gateway: GatewayProcess) -> None:
    (before,) = replicas_of(gateway, "frozen")
    os.kill(before["pid"], signal.SIGSTOP)
    assert wait_until(lambda: replicas_of(gateway, "frozen")[0]["state"] == "unhealthy", 5)
    assert wait_until(lambda: not pid_alive(before["pid"]), 10)

    def back() -> bool:
        (now,) = replicas_of(gateway, "frozen")
        return now["state"] == "ready" and now["pid"] != before["pid"]

    assert wait_until(back, 15)
    assert ask(gateway, "frozen", stream=False)[0] == 200


def test_a_stream_on_a_worker_that_hangs_ends_with_an_error_event(
    gateway: GatewayProcess,
) -> None:
    assert wait_until(lambda: replicas_of(gateway, "frozen")[0]["state"] == "ready", 15)
    started = time.monotonic()
    with (
        gateway.client() as client,
        client.stream(
            "POST", "/v1/chat/completions", json={"model": "frozen", "stream": True, **CHAT}
        ) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        os.kill(replicas_of(gateway, "frozen")[0]["pid"], signal.SIGSTOP)
        events = sse_data("\n".join(lines))
    assert time.monotonic() - started < 10  # 100 tokens x 50 ms would be 5 s; hung: never
    assert events and "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] in ("upstream_timeout", "upstream_error")


def test_no_answer_within_first_token_timeout_is_504(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "slowpoke", **CHAT})
    assert_error(response, 504, "upstream_timeout")
    assert wait_until(lambda: replicas_of(gateway, "slowpoke")[0]["in_flight"] == 0, 5)


def test_a_stream_silent_past_idle_timeout_ends_with_an_error_event(
    gateway: GatewayProcess,
) -> None:
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "slowpoke", "stream": True, **CHAT}
        )
    events = sse_data(response.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    assert wait_until(lambda: replicas_of(gateway, "slowpoke")[0]["in_flight"] == 0, 5)


def test_a_model_that_cannot_load_is_reported_and_the_others_serve(
    gateway: GatewayProcess,
) -> None:
    (broken,) = replicas_of(gateway, "broken")
    assert broken["state"] in ("failed", "starting") and broken["error"]
    ready = httpx.get(gateway.url + "/ready").json()
    assert ready["status"] == "not_ready" and not ready["models"]["broken"]["ready"]
    assert ready["models"]["broken"]["errors"]
    assert ask(gateway, "pair", stream=False)[0] == 200


def test_requests_for_a_model_that_cannot_load_get_503_with_the_reason(
    gateway: GatewayProcess,
) -> None:
    assert wait_until(lambda: replicas_of(gateway, "broken")[0]["state"] == "failed", 10)
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "broken", **CHAT})
    error = assert_error(response, 503, "model_unavailable")
    assert "broken" in error["message"]


WARMUP_CRASH = "worker crashed during warm-up (SIGSEGV, signal 11) - see docs/builds.md"


def test_a_worker_that_crashes_in_warm_up_is_a_failed_replica_that_gets_no_traffic(
    gateway: GatewayProcess,
) -> None:
    assert wait_until(lambda: replicas_of(gateway, "segv-warmup")[0]["error"] == WARMUP_CRASH, 10)
    (replica,) = replicas_of(gateway, "segv-warmup")
    assert replica["state"] in ("failed", "starting") and replica["requests_served"] == 0
    assert replica["last_exit"] == "SIGSEGV, signal 11"
    assert (
        WARMUP_CRASH in httpx.get(gateway.url + "/ready").json()["models"]["segv-warmup"]["errors"]
    )
    log = gateway.log_path.read_text()
    assert "segv-warmup[0]: worker pid" in log and WARMUP_CRASH in log
    assert replica["loaded_at"] is None  # never ready, so never routed to
    # Back-off: the restarts slow down (1, 2, 4 s...) instead of a crash loop.
    assert wait_until(lambda: len(exit_times(gateway, "segv-warmup")) >= 3, 20)
    times = exit_times(gateway, "segv-warmup")[:3]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[1] > gaps[0] + 0.5, gaps


def test_a_worker_that_crashes_on_a_request_is_restarted_and_its_caller_gets_a_clean_error(
    gateway: GatewayProcess,
) -> None:
    (before,) = replicas_of(gateway, "segv-request")
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "segv-request", **CHAT})
    assert_error(response, response.status_code)
    assert response.status_code in (502, 503), response.text
    assert wait_until(lambda: replicas_of(gateway, "segv-request")[0]["state"] == "ready", 10)
    (after,) = replicas_of(gateway, "segv-request")
    assert after["restarts"] > before["restarts"] and after["last_exit"] == "SIGSEGV, signal 11", (
        gateway.log()
    )
    assert "segv-request[0]: worker pid" in gateway.log_path.read_text()
    assert re.search(
        r"segv-request\[0\]: worker pid \d+ exited \(SIGSEGV, signal 11\)",
        gateway.log_path.read_text(),
    )


def test_a_model_retrying_a_failed_load_answers_503_at_once(gateway: GatewayProcess) -> None:
    def retrying() -> bool:
        (replica,) = replicas_of(gateway, "slow-broken")
        return replica["state"] == "starting" and replica["restarts"] >= 1

    assert wait_until(retrying, 20)
    began = time.monotonic()
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "slow-broken", **CHAT})
    error = assert_error(response, 503, "model_unavailable")
    assert time.monotonic() - began < 1.0
    # The load error is for ops (/admin/workers, the log), never a client's answer.
    assert "no such tensor" not in error["message"] and "/admin/workers" in error["message"]
    assert "no such tensor" in replicas_of(gateway, "slow-broken")[0]["error"]


def test_a_client_that_reads_nothing_frees_the_replica_after_idle_timeout(
    gateway: GatewayProcess,
) -> None:
    body = json.dumps({"model": "firehose", "stream": True, **CHAT}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head + body)
        assert wait_until(lambda: replicas_of(gateway, "firehose")[0]["in_flight"] == 1, 5)
        # The socket stays open and unread: the replica must come back all the same.
        assert wait_until(lambda: replicas_of(gateway, "firehose")[0]["in_flight"] == 0, 20)
        with gateway.client() as client:
            answer = client.post(
                "/v1/chat/completions", json={"model": "firehose", "max_tokens": 3, **CHAT}
            )
        assert answer.status_code == 200, answer.text
    assert "read nothing for 1 s; stream ended" in gateway.log_path.read_text()


def test_a_replica_stays_leased_while_its_worker_computes_for_a_client_that_left(
    gateway: GatewayProcess,
) -> None:
    request = {"model": "prefill", **CHAT}
    with gateway.client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json=request, headers={"X-Request-ID": "left"})
    time.sleep(0.5)  # the worker has 2 s of prefill left, for nobody
    busy = [w for w in replicas_of(gateway, "prefill") if w["in_flight"]]
    assert len(busy) == 1, replicas_of(gateway, "prefill")
    with gateway.client() as client:
        answer = client.post("/v1/chat/completions", json=request, headers={"X-Request-ID": "next"})
    assert answer.status_code == 200, answer.text
    # It went to the other replica instead of waiting behind the gone client's work.
    recent = gateway.worker_status("prefill", busy[0]["replica"])["recent"]
    assert [r["id"] for r in recent] == ["left"]
    assert wait_until(lambda: not any(w["in_flight"] for w in replicas_of(gateway, "prefill")), 10)


def log_times(gateway: GatewayProcess, model: str, what: str) -> list[float]:
    """When the supervisor logged `what` ("exited", "started worker") for `model`'s replica 0."""
    line = re.compile(rf"^(\S+ \S+) \w+ +gateway\.supervisor: {model}\[0\]: [^\n]*{what}")
    matches = (line.match(text) for text in gateway.log_path.read_text().splitlines())
    return [datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() for m in matches if m]


def exit_times(gateway: GatewayProcess, model: str) -> list[float]:
    return log_times(gateway, model, "exited")


def test_load_retries_back_off(gateway: GatewayProcess) -> None:
    assert wait_until(lambda: len(exit_times(gateway, "broken")) >= 4, 40)
    exits = exit_times(gateway, "broken")[:3]
    starts = log_times(gateway, "broken", "started worker")[1:4]  # the restarts
    # The wait from a failed start's exit to the next start doubles: 1, 2, 4 s (however long
    # each attempt took to fail on a loaded machine).
    waits = [start - exit for exit, start in zip(exits, starts, strict=True)]
    assert waits[1] - waits[0] > 0.5 and waits[2] - waits[1] > 1.2, waits


def draining_gateway(tmp_path: Path, drain_timeout: float, tokens: int = 40) -> GatewayProcess:
    config = {
        "server": {"drain_timeout": drain_timeout},
        "models": [standin("m", token_delay=0.05, tokens=tokens)],
    }
    return GatewayProcess(config, tmp_path).start()


def in_flight(gateway: GatewayProcess) -> threading.Thread:
    result: dict[str, Any] = {}

    def run() -> None:
        result["status"], result["text"] = ask(gateway, "m", stream=True)

    thread = threading.Thread(target=run)
    thread.result = result  # type: ignore[attr-defined]
    thread.start()
    assert wait_until(lambda: any(w["in_flight"] for w in gateway.workers()), 5)
    return thread


def test_sigterm_refuses_new_requests_and_finishes_those_in_flight(tmp_path: Path) -> None:
    gateway = draining_gateway(tmp_path, drain_timeout=30)
    pids = [w["pid"] for w in gateway.workers()]
    running = in_flight(gateway)
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: httpx.get(gateway.url + "/ready").status_code == 503, 5)
    refused = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "m", **CHAT})
    assert_error(refused, 503, "shutting_down")
    assert refused.headers["retry-after"]
    running.join(10)
    assert running.result["status"] == 200  # type: ignore[attr-defined]
    assert sse_data(running.result["text"])[-1] == "[DONE]"  # type: ignore[attr-defined]
    assert gateway.proc.wait(15) == 0
    assert not any(pid_alive(p) for p in pids)


def test_ctrl_c_to_the_process_group_drains_without_stopping_workers_first(
    tmp_path: Path,
) -> None:
    # 7 s of tokens: longer than a worker's own shutdown grace (5 s) if the signal reached it.
    gateway = draining_gateway(tmp_path, drain_timeout=30, tokens=140)
    running = in_flight(gateway)
    assert gateway.proc is not None
    os.killpg(gateway.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    running.join(20)
    assert running.result["status"] == 200  # type: ignore[attr-defined]
    assert sse_data(running.result["text"])[-1] == "[DONE]"  # type: ignore[attr-defined]
    assert gateway.proc.wait(15) == 0


def test_sigterm_stops_waiting_after_the_drain_timeout(tmp_path: Path) -> None:
    gateway = draining_gateway(tmp_path, drain_timeout=0.5)
    running = in_flight(gateway)
    assert gateway.proc is not None
    stopped_at = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(15) == 0
    assert time.monotonic() - stopped_at < 12
    running.join(10)
