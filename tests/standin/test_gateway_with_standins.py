"""The real gateway over stand-in worker processes: routing, queueing, errors, disconnects."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    CHAT,
    WORKER_AUTH,
    WORKER_SECRET,
    GatewayProcess,
    api_key,
    assert_error,
    assert_valid,
    running_gateway,
    sse_data,
    standin,
    wait_until,
)

API_KEY = "sk-test-key-0123456789"


CONFIG = {
    "server": {"max_body_bytes": 64 * 1024},
    "auth": {"keys": [api_key("tests", API_KEY, admin=True)]},
    "models": [
        {**standin("fast", replicas=2), "aliases": ["fast-alias"]},
        standin("slow", max_queue=1, token_delay=0.1, tokens=30),
        standin("impatient", queue_timeout=0.3, token_delay=0.1, tokens=30),
        standin("long", token_delay=0.05, tokens=200),
        standin("restart", token_delay=0.01),
        standin("crashy", exit_after_tokens=1),
        {**standin("wide", token_delay=0.1, tokens=10), "capacity": 3},
    ],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("gw"), api_key=API_KEY)


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def in_background(client: httpx.Client, model: str, **extra: Any) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: client.post("/v1/chat/completions", json={"model": model, **CHAT, **extra})
    )
    thread.start()
    return thread


def busy(gateway: GatewayProcess, model: str, in_flight: int = 1) -> bool:
    return sum(w["in_flight"] for w in gateway.workers() if w["model"] == model) == in_flight


def queued(gateway: GatewayProcess, model: str) -> int:
    with gateway.client() as client:
        count: int = client.get("/admin/workers").json()["queued"][model]
        return count


def test_chat_is_relayed_and_valid(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"model": "fast", **CHAT})
    assert response.status_code == 200
    assert_valid("CreateChatCompletionResponse", response.json())
    assert response.headers["x-request-id"]


def test_an_alias_routes_to_its_model(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"model": "fast-alias", **CHAT})
    assert response.status_code == 200 and response.json()["model"] == "fast"


def test_a_stream_ends_with_done(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"model": "fast", "stream": True, **CHAT})
    events = sse_data(response.text)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]" and len(events) > 3


def test_missing_api_key_is_401(gateway: GatewayProcess) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "fast", **CHAT})
    assert_error(response, 401, "invalid_api_key")


def test_wrong_api_key_is_401(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    assert_error(response, 401, "invalid_api_key")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/fast"),
        ("GET", "/admin/workers"),
        ("GET", "/admin/config"),
        ("POST", "/admin/reload"),
        ("POST", "/v1/embeddings"),
        ("GET", "/admin/gateways"),
    ],
)
def test_every_api_and_admin_route_needs_the_key(
    gateway: GatewayProcess, method: str, path: str
) -> None:
    assert_error(httpx.request(method, gateway.url + path), 401, "invalid_api_key")


@pytest.mark.parametrize(
    "value", ["Bearer café".encode(), b"Bearer \xff\xfe", b"Bearer", b"Basic abc", b"\xe2\x82\xac"]
)
def test_a_malformed_or_non_ascii_authorization_is_a_401(
    gateway: GatewayProcess, value: bytes
) -> None:
    response = httpx.get(gateway.url + "/v1/models", headers=[(b"Authorization", value)])
    assert_error(response, 401, "invalid_api_key")


def test_whitespace_around_the_key_is_not_part_of_it(gateway: GatewayProcess) -> None:
    # Raw bytes: httpx refuses to send a header value with trailing whitespace.
    request = (
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer  {API_KEY} \t\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]


@pytest.mark.parametrize(("method", "path"), [("GET", "/status"), ("POST", "/v1/chat/completions")])
def test_a_worker_serves_only_requests_carrying_its_secret(
    gateway: GatewayProcess, method: str, path: str
) -> None:
    url = gateway.workers()[0]["url"] + path
    body = {"model": "fast", **CHAT}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": WORKER_SECRET}):
        response = httpx.request(method, url, json=body, headers=headers)
        assert_error(response, 401, "invalid_api_key")
    assert httpx.request(method, url, json=body, headers=WORKER_AUTH).status_code == 200


def test_health_needs_no_key(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}


def test_unknown_model_is_404_listing_the_available_names(client: httpx.Client) -> None:
    error = assert_error(
        client.post("/v1/chat/completions", json={"model": "gpt-5", **CHAT}),
        404,
        "model_not_found",
    )
    assert "gpt-5" in error["message"] and "fast-alias" in error["message"]
    assert error["param"] == "model"


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=b'{"model": "fast",',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in assert_error(response, 400)["message"]


def test_json_nested_too_deep_is_400(client: httpx.Client) -> None:
    body = b'{"model": "fast", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    response = client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("trace-42.a:b_C", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("a b", False),
        ("<script>", False),
        ("x" * 9000, False),
    ],
)
def test_a_safe_request_id_is_echoed_and_any_other_replaced(
    gateway: GatewayProcess, client: httpx.Client, given: str, kept: bool
) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "fast", **CHAT}, headers={"X-Request-ID": given}
    )
    assert response.status_code == 200, response.text
    echoed = response.headers["x-request-id"]
    assert (echoed == given) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", echoed)


def test_missing_model_is_400(client: httpx.Client) -> None:
    assert assert_error(client.post("/v1/chat/completions", json=CHAT), 400)["param"] == "model"


def test_missing_messages_is_400_from_the_worker(client: httpx.Client) -> None:
    assert_error(client.post("/v1/chat/completions", json={"model": "fast"}), 400)


def test_streaming_embeddings_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/embeddings", json={"model": "fast", "input": "x", "stream": True})
    assert assert_error(response, 400)["param"] == "stream"


def test_a_body_over_the_limit_is_413(client: httpx.Client) -> None:
    huge = {"model": "fast", "messages": [{"role": "user", "content": "x" * 100_000}]}
    assert_error(client.post("/v1/chat/completions", json=huge), 413, "request_too_large")


def test_unknown_route_is_an_openai_shaped_404(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nothing"), 404)


def test_models_lists_names_and_aliases(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert_valid("ListModelsResponse", body)
    assert {m["id"] for m in body["data"]} == {
        "fast",
        "fast-alias",
        "slow",
        "impatient",
        "long",
        "restart",
        "crashy",
        "wide",
    }


def test_a_model_can_be_retrieved_by_alias(client: httpx.Client) -> None:
    body = client.get("/v1/models/fast-alias").json()
    assert_valid("Model", body)
    assert body["id"] == "fast-alias"
    assert_error(client.get("/v1/models/unknown"), 404, "model_not_found")


def test_a_full_queue_is_429_with_retry_after(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    running = in_background(client, "slow")
    assert wait_until(lambda: busy(gateway, "slow"), 5)
    waiting = in_background(client, "slow")
    assert wait_until(lambda: queued(gateway, "slow") == 1, 5)
    response = client.post("/v1/chat/completions", json={"model": "slow", **CHAT})
    assert_error(response, 429, "rate_limit_exceeded")
    assert response.headers["retry-after"] == "1"
    running.join(), waiting.join()


def test_admin_workers_shows_a_full_replica_busy_and_since_when(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    def slow_replica() -> dict[str, Any]:
        workers = client.get("/admin/workers").json()["data"]
        found: dict[str, Any] = next(w for w in workers if w["model"] == "slow")
        return found

    idle_since = slow_replica()["state_since"]
    running = in_background(client, "slow")
    assert wait_until(lambda: slow_replica()["state"] == "busy", 5)
    busy_since = slow_replica()["state_since"]
    running.join()
    after = slow_replica()
    assert after["state"] == "ready" and idle_since < busy_since < after["state_since"]


def test_without_redis_the_gateways_alive_are_this_one(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    (me,) = client.get("/admin/gateways").json()["data"]
    assert me["port"] == gateway.port and me["pid"] == gateway.proc.pid  # type: ignore[union-attr]
    assert me["version"] and me["draining"] is False and "error" not in me


def test_waiting_past_queue_timeout_is_503(gateway: GatewayProcess, client: httpx.Client) -> None:
    running = in_background(client, "impatient")
    assert wait_until(lambda: busy(gateway, "impatient"), 5)
    response = client.post("/v1/chat/completions", json={"model": "impatient", **CHAT})
    assert_error(response, 503, "queue_timeout")
    assert "retry-after" in response.headers
    running.join()


def test_a_client_gone_while_queued_leaves_the_queue(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    running = in_background(client, "slow")
    assert wait_until(lambda: busy(gateway, "slow"), 5)
    with pytest.raises(httpx.ReadTimeout), gateway.client(timeout=0.5) as impatient:
        impatient.post(
            "/v1/chat/completions",
            json={"model": "slow", **CHAT},
            headers={"X-Request-Id": "gave-up-while-queued"},
        )
    assert wait_until(lambda: queued(gateway, "slow") == 0, 5)
    running.join()
    recent = gateway.worker_status("slow", 0)["recent"]
    assert "gave-up-while-queued" not in {r["id"] for r in recent}


def test_a_client_gone_mid_stream_frees_the_replica_at_once(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    body = {"model": "long", "stream": True, **CHAT}
    with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"X-Request-Id": "walked-away"}
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    left_at = time.time()
    assert wait_until(lambda: busy(gateway, "long", 0), 5)
    response = client.post(
        "/v1/chat/completions",
        json={"model": "long", "max_tokens": 2, **CHAT},
        headers={"X-Request-Id": "next"},
    )
    assert response.status_code == 200
    records = {r["id"]: r for r in gateway.worker_status("long", 0)["recent"]}
    assert records["walked-away"]["outcome"] == "cancelled"
    # The abandoned generation would have run 200 x 50 ms = 10 s; it stopped within a few tokens.
    assert records["walked-away"]["finished"] - left_at < 1.0
    assert records["next"]["started"] >= records["walked-away"]["finished"]


def test_a_killed_worker_is_restarted(gateway: GatewayProcess, client: httpx.Client) -> None:
    (before,) = [w for w in gateway.workers() if w["model"] == "restart"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        (now,) = [w for w in gateway.workers() if w["model"] == "restart"]
        return now["state"] == "ready" and now["pid"] != before["pid"] and now["restarts"] == 1

    assert wait_until(restarted, 15)
    response = client.post("/v1/chat/completions", json={"model": "restart", **CHAT})
    assert response.status_code == 200


def test_a_worker_dying_before_answering_is_retried_once_then_a_clean_502(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    response = client.post("/v1/chat/completions", json={"model": "crashy", **CHAT})
    assert_error(response, 502, "upstream_error")
    # Both attempts reached a worker: the first one and its restarted successor.
    assert wait_until(
        lambda: [w["restarts"] for w in gateway.workers() if w["model"] == "crashy"] == [2], 10
    )


def test_a_replica_with_capacity_serves_that_many_requests_at_once(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    threads = [in_background(client, "wide") for _ in range(3)]
    assert wait_until(lambda: busy(gateway, "wide", 3), 5)
    assert queued(gateway, "wide") == 0
    for thread in threads:
        thread.join()


def test_sigkill_of_the_gateway_leaves_no_worker(tmp_path: Path) -> None:
    gateway = GatewayProcess({"models": [standin("a", replicas=2)]}, tmp_path).start()
    pids = [w["pid"] for w in gateway.workers()]
    assert gateway.proc is not None
    gateway.proc.kill()
    gateway.proc.wait()
    from tests.support import pid_alive

    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 10), pids


def test_sigterm_stops_workers_and_exits_cleanly(tmp_path: Path) -> None:
    gateway = GatewayProcess({"models": [standin("a")]}, tmp_path).start()
    pids = [w["pid"] for w in gateway.workers()]
    assert gateway.stop() == 0
    from tests.support import pid_alive

    assert not any(pid_alive(p) for p in pids)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b'{"model": "gpt-5", "messages": []}', 404),
        ("POST", "/v1/assistants", b"{}", 404),
        ("GET", "/health", None, 200),
    ],
)
def test_every_answer_carries_a_request_id_errors_the_gateway_makes_included(
    client: httpx.Client, method: str, path: str, body: bytes | None, status: int
) -> None:
    response = client.request(method, path, content=body)
    assert response.status_code == status
    assert re.fullmatch(r"[0-9a-f]{20}", response.headers["x-request-id"])
    echoed = client.request(method, path, content=body, headers={"X-Request-ID": "mine-1"})
    assert echoed.headers["x-request-id"] == "mine-1"
    unkeyed = httpx.request(method, client.base_url.join(path), content=body)  # 401 or open
    assert unkeyed.headers["x-request-id"]


def test_an_unknown_endpoint_says_this_gateway_does_not_serve_it(client: httpx.Client) -> None:
    for method, path in [
        ("POST", "/v1/audio/speech"),
        ("GET", "/v1/files"),
        ("POST", "/v1/moderations"),
    ]:
        error = assert_error(client.request(method, path, json={}), 404, "not_found")
        assert error["message"].startswith(f"Invalid URL ({method} {path}): llm-gateway does not")
        assert "POST /v1/chat/completions" in error["message"]


def test_an_http_1_0_client_gets_a_clear_400_for_a_stream_and_a_whole_answer_otherwise(
    gateway: GatewayProcess,
) -> None:
    def over_http_1_0(stream: bool) -> bytes:
        body = json.dumps({"model": "fast", "stream": stream, **CHAT}).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer "
            f"{API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(head + body)
            return sock.makefile("rb").read()

    streamed = over_http_1_0(True)
    assert streamed.startswith(b"HTTP/1.1 400") and b"Streaming needs HTTP/1.1" in streamed
    assert b"chunked" not in streamed.lower()
    whole = over_http_1_0(False)
    assert whole.startswith(b"HTTP/1.1 200") and b"content-length" in whole.lower()


def test_a_large_json_answer_is_gzipped_when_asked_and_a_stream_never(
    client: httpx.Client,
) -> None:
    body = {"model": "fast", "input": [f"text {i}" for i in range(64)]}
    plain = client.post("/v1/embeddings", json=body, headers={"Accept-Encoding": "identity"})
    packed = client.post("/v1/embeddings", json=body, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip" and packed.json() == plain.json()
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    assert_valid("CreateEmbeddingResponse", packed.json())
    small = client.post(
        "/v1/chat/completions", json={"model": "fast", **CHAT}, headers={"Accept-Encoding": "gzip"}
    )
    assert small.status_code == 200 and "content-encoding" not in small.headers  # not worth it
    streamed = client.post(
        "/v1/chat/completions",
        headers={"Accept-Encoding": "gzip"},
        json={"model": "fast", **CHAT, "stream": True},
    )
    assert streamed.status_code == 200 and "content-encoding" not in streamed.headers
