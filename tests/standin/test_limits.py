"""Per-key limits and fair queueing on the real gateway over stand-in workers (in-process state)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.standin.test_metrics import scrape, value
from tests.support import (
    CHAT,
    GatewayProcess,
    api_key,
    assert_error,
    assert_valid,
    running_gateway,
    sse_data,
    standin,
    wait_until,
)

ADMIN = "sk-admin-0123456789abcdef"
KEYS = {
    name: f"sk-{name}-0123456789abcdef" for name in ("rpm", "tpm", "conc", "light", "heavy", "resp")
}
CONFIG = {
    "auth": {
        "keys": [
            api_key("ops", ADMIN, admin=True),
            api_key("rpm", KEYS["rpm"], rpm=3),
            api_key("tpm", KEYS["tpm"], tpm=300),
            api_key("conc", KEYS["conc"], max_concurrent=1),
            api_key("light", KEYS["light"], weight=1),
            api_key("heavy", KEYS["heavy"], weight=3),
            api_key("resp", KEYS["resp"], tpm=1000),
        ]
    },
    "models": [
        standin("m", max_queue=200),
        standin("busy", max_queue=200, token_delay=0.01, tokens=5),
        standin("slow", token_delay=0.1, tokens=10),
        standin("impatient", queue_timeout=0.5, token_delay=0.1, tokens=20),
    ],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("limits"), api_key=ADMIN)


def as_key(gateway: GatewayProcess, name: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEYS[name]}"}
    return httpx.Client(base_url=gateway.url, headers=headers, timeout=60)


def chat(client: httpx.Client, model: str = "m", **extra: object) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, **CHAT, **extra})


def test_over_rpm_is_a_429_with_retry_after_and_openai_s_headers(gateway: GatewayProcess) -> None:
    with as_key(gateway, "rpm") as client:
        answers = [chat(client) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    error = assert_error(answers[3], 429, "rate_limit_exceeded")
    assert "requests per minute" in error["message"]
    assert int(answers[3].headers["retry-after"]) >= 1
    assert answers[3].headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in answers[0].headers  # no tpm: no token headers
    samples = scrape(gateway)
    assert (
        value(
            samples,
            "llm_gateway_rejected_requests_total",
            model="m",
            reason="rate_limit",
            key="rpm",
        )
        == 1
    )


def test_tpm_counts_the_worker_s_tokens(gateway: GatewayProcess) -> None:
    with as_key(gateway, "tpm") as client:
        first = chat(client, max_tokens=8)
        assert first.status_code == 200
        used = first.json()["usage"]["total_tokens"]
        # Reserved up front (bytes/4 + max_tokens), the real count once it ended.
        second = chat(client, max_tokens=8)
        remaining = int(second.headers["x-ratelimit-remaining-tokens"])
        expected = 300 - used - (len(second.request.content) // 4 + 8)
        assert expected <= remaining <= expected + 10  # refilled 5 a second meanwhile
        while (answer := chat(client, max_tokens=200)).status_code == 200:
            pass  # reservations of 200+ run the minute's 300 into debt quickly
    error = assert_error(answer, 429, "rate_limit_exceeded")
    assert "tokens per minute" in error["message"]


def test_over_max_concurrent_is_a_429_and_its_slot_comes_back(gateway: GatewayProcess) -> None:
    with as_key(gateway, "conc") as client, as_key(gateway, "conc") as other:
        holder = threading.Thread(target=lambda: chat(client, "slow"))
        holder.start()
        with gateway.client() as admin:
            assert wait_until(
                lambda: any(
                    w["in_flight"]
                    for w in admin.get("/admin/workers").json()["data"]
                    if w["model"] == "slow"
                ),
                5,
            )
        assert_error(chat(other), 429, "rate_limit_exceeded")
        holder.join()
        assert chat(other).status_code == 200


def test_two_keys_at_weights_1_to_3_get_about_1_to_3_of_a_saturated_model(
    gateway: GatewayProcess,
) -> None:
    """16 clients per key keep the one replica of "busy" saturated for a few seconds."""
    done: Counter[str] = Counter()

    async def client(name: str, until: float) -> None:
        headers = {"Authorization": f"Bearer {KEYS[name]}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=60) as c:
            while time.monotonic() < until:
                response = await c.post("/v1/chat/completions", json={"model": "busy", **CHAT})
                assert response.status_code == 200, response.text
                done[name] += 1

    async def saturate() -> None:
        until = time.monotonic() + 6
        await asyncio.gather(
            *(client(name, until) for name in ("light", "heavy") for _ in range(16))
        )

    asyncio.run(saturate())
    share = done["heavy"] / (done["light"] + done["heavy"])
    assert done["light"] > 10 and 0.65 <= share <= 0.85, done  # 0.75 by weight


def test_a_request_that_waited_says_how_long_and_where_it_entered(
    gateway: GatewayProcess,
) -> None:
    with gateway.client() as client:
        holder = threading.Thread(target=lambda: chat(client, "slow"))
        holder.start()
        assert wait_until(
            lambda: any(
                w["in_flight"]
                for w in client.get("/admin/workers").json()["data"]
                if w["model"] == "slow"
            ),
            5,
        )
        waited = chat(client, "slow")
        holder.join()
        fast = chat(client, "slow")
    assert waited.status_code == 200 and waited.headers["x-queue-position"] == "1"
    assert int(waited.headers["x-queue-wait-ms"]) >= 100
    assert "x-queue-wait-ms" not in fast.headers


def test_admin_usage_counts_requests_and_tokens_by_key_model_and_day(
    gateway: GatewayProcess,
) -> None:
    with as_key(gateway, "light") as client:
        answer = chat(client, max_tokens=3)
    with gateway.client() as admin:
        rows = admin.get("/admin/usage").json()["data"]
    (light,) = [r for r in rows if r["key"] == "light" and r["model"] == "m"]
    assert light["requests"] >= 1 and light["completion_tokens"] >= 3
    assert light["prompt_tokens"] >= answer.json()["usage"]["prompt_tokens"]
    assert_error(httpx.get(gateway.url + "/admin/usage"), 401, "invalid_api_key")


def hold(gateway: GatewayProcess, model: str) -> threading.Thread:
    """A request keeping `model`'s one replica busy; returns once it is in flight."""

    def run() -> None:
        with gateway.client() as client:
            chat(client, model)

    holder = threading.Thread(target=run)
    holder.start()
    with gateway.client() as admin:
        assert wait_until(
            lambda: any(
                w["in_flight"]
                for w in admin.get("/admin/workers").json()["data"]
                if w["model"] == model
            ),
            5,
        )
    return holder


def test_a_stream_that_waits_is_told_its_place_in_line_then_streams(
    gateway: GatewayProcess,
) -> None:
    holder = hold(gateway, "slow")
    body = {"model": "slow", "stream": True, **CHAT}
    with (
        gateway.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        chunks = response.iter_bytes()
        first = next(chunks)  # before the holder's answer is done
        assert holder.is_alive() and first.startswith(b": queued position=1\n\n")
        text = (first + b"".join(chunks)).decode()
    holder.join()
    assert response.status_code == 200  # sent at once: the place in line is in the comment
    events = sse_data(text)
    assert events[-1] == "[DONE]" and len(events) > 3
    for event in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(event))


def test_the_official_client_streams_a_queued_request_as_any_other(
    gateway: GatewayProcess,
) -> None:
    holder = hold(gateway, "slow")
    client = OpenAI(base_url=gateway.url + "/v1", api_key=ADMIN, max_retries=0)
    stream = client.chat.completions.create(model="slow", stream=True, **CHAT)  # type: ignore[call-overload]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    holder.join()
    assert text == " ".join(f"tok{i}" for i in range(10))


def test_a_stream_that_times_out_in_line_ends_with_an_error_event(
    gateway: GatewayProcess,
) -> None:
    holder = hold(gateway, "impatient")
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "impatient", "stream": True, **CHAT}
        )
    holder.join()
    assert response.status_code == 200 and response.text.startswith(": queued position=1")
    (event,) = sse_data(response.text)  # no [DONE]: the stream failed
    error = json.loads(event)
    assert_valid("ErrorResponse", error)
    assert error["error"]["code"] == "queue_timeout"
    samples = scrape(gateway)
    assert (
        value(
            samples,
            "llm_gateway_requests_total",
            model="impatient",
            endpoint="chat_completions",
            status="503",
            key="ops",
        )
        == 1
    )
    assert (
        value(
            samples,
            "llm_gateway_rejected_requests_total",
            model="impatient",
            reason="queue_timeout",
            key="ops",
        )
        == 1
    )


def test_a_responses_request_reserves_its_max_output_tokens(gateway: GatewayProcess) -> None:
    with as_key(gateway, "resp") as client:
        body = {"model": "m", "input": "hi", "max_output_tokens": 250}
        answer = client.post("/v1/responses", json=body)
    assert answer.status_code == 200
    remaining = int(answer.headers["x-ratelimit-remaining-tokens"])
    assert remaining <= 1000 - 250  # reserved up front: bytes / 4 + max_output_tokens
