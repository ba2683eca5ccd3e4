"""The request log: one record per answered API request, as JSON lines for a collector."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import CHAT, JSON_LOG, GatewayProcess, running_gateway, standin, wait_until


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"models": [{**standin("m", replicas=2), "aliases": ["m-alias"]}]}
    yield from running_gateway(config, tmp_path_factory.mktemp("request-log"), log=JSON_LOG)


def lines(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line]


def record(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    found = [r for r in lines(gateway) if r.get("request_id") == request_id]
    assert len(found) == 1, found
    return found[0]


def test_each_answer_is_one_json_record_with_its_figures(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        client.post(
            "/v1/chat/completions",
            json={"model": "m-alias", **CHAT},
            headers={"X-Request-ID": "plain-1"},
        )
        client.post(
            "/v1/chat/completions",
            json={"model": "m", "stream": True, **CHAT},
            headers={"X-Request-ID": "stream-1"},
        )
    assert wait_until(lambda: any(r.get("request_id") == "stream-1" for r in lines(gateway)), 5)
    plain = record(gateway, "plain-1")
    assert plain["logger"] == "gateway.requests" and plain["level"] == "info"
    assert (plain["model"], plain["endpoint"], plain["status"]) == ("m", "chat_completions", 200)
    assert plain["replica"] in (0, 1) and plain["duration_ms"] > 0 and plain["ttft_ms"] is None
    assert plain["queue_wait_ms"] >= 0
    assert (plain["prompt_tokens"], plain["completion_tokens"]) == (2, 8)  # the stand-in's count
    stream = record(gateway, "stream-1")
    assert 0 < stream["ttft_ms"] <= stream["duration_ms"]
    assert (stream["prompt_tokens"], stream["completion_tokens"]) == (2, 8)


def test_every_line_of_a_json_log_is_json(gateway: GatewayProcess) -> None:
    records = lines(gateway)  # json.loads would raise on a line that is not
    assert {"gateway.edge", "gateway.registry"} <= {r["logger"] for r in records}
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    # Worker output is in the same log, each line saying which replica it comes from.
    workers = {(r["model"], r["replica"]) for r in records if r["logger"] == "worker"}
    assert workers == {("m", 0), ("m", 1)}
