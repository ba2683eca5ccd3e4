"""Prefix-affinity routing through the real gateway: a conversation's turns go back to the replica
that served the ones before, where least-busy routing would not send them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import GatewayProcess, running_gateway, standin, wait_until

SYSTEM = {"role": "system", "content": "You answer in one line. " * 30}


def turns(n: int) -> list[dict[str, str]]:
    messages = [SYSTEM]
    for i in range(n):
        messages += [
            {"role": "user", "content": f"question {i}, " * 40},
            {"role": "assistant", "content": f"answer {i}. " * 40},
        ]
    return [*messages, {"role": "user", "content": "and then?"}]


@pytest.fixture(params=["prefix_affinity", "least_busy"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayProcess]:
    model = {**standin("m", replicas=2, token_delay=0.05), "routing": request.param}
    yield from running_gateway({"models": [model]}, tmp_path)


def served(gateway: GatewayProcess) -> list[int]:
    return [w["requests_served"] for w in sorted(gateway.workers(), key=lambda w: w["replica"])]


def test_a_conversation_goes_back_to_its_replica(gateway: GatewayProcess) -> None:
    def chat(messages: list[dict[str, str]]) -> None:
        answer = httpx.post(
            gateway.url + "/v1/chat/completions",
            timeout=30,
            json={"model": "m", "messages": messages},
        )
        assert answer.status_code == 200, answer.text

    other = threading.Thread(target=chat, args=([{"role": "user", "content": "other"}],))
    other.start()  # replica 0 busy: the conversation starts on replica 1
    assert wait_until(lambda: any(w["in_flight"] for w in gateway.workers()), 5)
    chat(turns(0))
    other.join()
    for n in range(1, 4):  # both free each time: least busy means replica 0
        chat(turns(n))
    routing = gateway.config_path.read_text()
    expected = [1, 4] if "prefix_affinity" in routing else [4, 1]
    assert wait_until(lambda: served(gateway) == expected, 5), served(gateway)
