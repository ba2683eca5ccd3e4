"""GET /metrics on the real gateway over stand-in workers, read with Prometheus's own parser."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    CHAT,
    JSON_LOG,
    GatewayProcess,
    assert_error,
    running_gateway,
    standin,
    wait_until,
)

CONFIG = {
    "models": [
        {**standin("pair", replicas=2), "aliases": ["pair-alias"]},
        standin("slow", max_queue=0, token_delay=0.2, tokens=10),
    ]
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("metrics"))


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gateway: GatewayProcess) -> Samples:
    response = httpx.get(gateway.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_replica_families_are_there_from_the_start(gateway: GatewayProcess) -> None:
    # /ready needs one ready replica per model: the second of "pair" may still be warming up.
    assert wait_until(lambda: all(w["state"] == "ready" for w in gateway.workers()), 30)
    samples = scrape(gateway)
    for index in ("0", "1"):
        replica = {"model": "pair", "replica": index}
        assert value(samples, "llm_gateway_replica_state", **replica, state="ready") == 1
        assert value(samples, "llm_gateway_replica_state", **replica, state="failed") == 0
        assert ("llm_gateway_replica_restarts_total", frozenset(replica.items())) in samples
        assert value(samples, "llm_gateway_replica_info", **replica, device="cpu") == 1
        assert 0 < value(samples, "llm_gateway_replica_load_seconds", **replica) < 30
    assert value(samples, "llm_gateway_queue_depth", model="slow") == 0


def test_answers_are_counted_and_timed_by_the_configured_model_name(
    gateway: GatewayProcess,
) -> None:
    before = scrape(gateway)
    with gateway.client() as client:
        for _ in range(3):  # by alias: counted under the model's own name
            assert (
                client.post(
                    "/v1/chat/completions", json={"model": "pair-alias", **CHAT}
                ).status_code
                == 200
            )
        assert (
            client.post("/v1/chat/completions", json={"model": "nope", **CHAT}).status_code == 404
        )
    after = scrape(gateway)
    ok = {"model": "pair", "endpoint": "chat_completions", "status": "200", "key": "anonymous"}
    assert (
        value(after, "llm_gateway_requests_total", **ok)
        - value(before, "llm_gateway_requests_total", **ok)
        == 3
    )
    timed = {"model": "pair", "endpoint": "chat_completions"}
    assert value(after, "llm_gateway_request_duration_seconds_count", **timed) >= 3
    unknown = {"model": "none", "endpoint": "chat_completions", "status": "404", "key": "anonymous"}
    assert value(after, "llm_gateway_requests_total", **unknown) >= 1
    assert not any(dict(labels).get("model") in ("pair-alias", "nope") for _, labels in after)
    served = sum(
        value(after, "llm_gateway_replica_requests_total", model="pair", replica=i)
        for i in ("0", "1")
    )
    assert served >= 3


def test_a_full_queue_is_counted_as_a_rejection(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        holder = threading.Thread(
            target=lambda: client.post("/v1/chat/completions", json={"model": "slow", **CHAT})
        )
        holder.start()
        assert wait_until(
            lambda: (
                value(scrape(gateway), "llm_gateway_replica_in_flight", model="slow", replica="0")
                == 1
            ),
            5,
        )
        assert (
            value(
                scrape(gateway),
                "llm_gateway_replica_state",
                model="slow",
                replica="0",
                state="busy",
            )
            == 1
        )
        refused = client.post("/v1/chat/completions", json={"model": "slow", **CHAT})
        holder.join()
    assert refused.status_code == 429
    assert (
        value(
            scrape(gateway),
            "llm_gateway_rejected_requests_total",
            model="slow",
            reason="queue_full",
            key="anonymous",
        )
        == 1
    )


def test_streams_record_time_to_first_token_and_every_answer_its_overhead(
    gateway: GatewayProcess,
) -> None:
    before = scrape(gateway)
    with gateway.client() as client:
        streamed = client.post(
            "/v1/chat/completions", json={"model": "pair", "stream": True, **CHAT}
        )
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    after = scrape(gateway)
    labels = {"model": "pair", "endpoint": "chat_completions"}

    def grew(name: str, **extra: str) -> float:
        return value(after, name, **labels, **extra) - value(before, name, **labels, **extra)

    assert grew("llm_gateway_time_to_first_token_seconds_count") == 1
    assert grew("llm_gateway_inter_token_latency_seconds_count") >= 3  # role, tokens, end
    assert 0 < grew("llm_gateway_time_to_first_token_seconds_sum") < 5
    assert grew("llm_gateway_overhead_seconds_count") == 1
    assert 0 < grew("llm_gateway_overhead_seconds_sum") < 0.5  # the gateway's own share
    queued = value(after, "llm_gateway_request_queue_time_seconds_count", model="pair")
    assert queued >= 1  # every request that reached a worker, waited or not


def test_tokens_are_counted_from_the_worker_s_usage_streams_included(
    gateway: GatewayProcess,
) -> None:
    before = scrape(gateway)
    with gateway.client() as client:
        streamed = client.post(
            "/v1/chat/completions", json={"model": "pair", "stream": True, **CHAT}
        )
        embedded = client.post("/v1/embeddings", json={"model": "pair", "input": "a b c"})
    assert streamed.status_code == embedded.status_code == 200
    # The client asked for no usage chunk and got none: the worker's report was taken out.
    assert '"usage"' not in streamed.text and ": usage" not in streamed.text
    after = scrape(gateway)

    def grew(name: str, endpoint: str) -> float:
        labels = {"model": "pair", "endpoint": endpoint, "key": "anonymous"}
        return value(after, name, **labels) - value(before, name, **labels)

    # The stand-in counts a word per token, plus one per message; tests.support has it answer 8.
    assert grew("llm_gateway_prompt_tokens_total", "chat_completions") == 2
    assert grew("llm_gateway_completion_tokens_total", "chat_completions") == 8
    assert grew("llm_gateway_prompt_tokens_total", "embeddings") == 3
    assert grew("llm_gateway_completion_tokens_total", "embeddings") == 0


def test_metrics_can_be_turned_off_and_the_request_log_stays(tmp_path: Path) -> None:
    config = {"server": {"metrics": False}, "models": [standin("m")]}
    gateway = GatewayProcess(config, tmp_path, log=JSON_LOG)
    gateway.start()
    try:
        with gateway.client() as client:
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "m", **CHAT},
                headers={"X-Request-ID": "unmetered"},
            )
            assert answer.status_code == 200
            error = assert_error(client.get("/metrics"), 404)
        assert "server.metrics: false" in error["message"]
        assert wait_until(lambda: "unmetered" in gateway.log_path.read_text(), 5)
    finally:
        gateway.stop()
