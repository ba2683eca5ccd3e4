"""Property-based fuzzing of the real gateway over stand-in workers: no 5xx, no hang, still healthy.

Bodies are valid OpenAI requests, or valid ones with one field replaced by any JSON value,
or raw bytes; the example budget is fixed and derandomized.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import GatewayProcess, assert_valid, running_gateway, sse_data, standin

MODELS = ["chat", "chat-alias"]
CONFIG = {
    "server": {"max_body_bytes": 32 * 1024},
    "models": [
        {
            **standin("chat", replicas=2, max_queue=64, token_delay=0.0, tokens=3),
            "aliases": ["chat-alias"],
        }
    ],
}
ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
text = st.text(min_size=1, max_size=30)
good_fields = {
    "stream": st.booleans(),
    "stream_options": st.just({"include_usage": True}),
    "max_tokens": st.integers(1, 8),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "seed": st.integers(0, 2**31),
    "stop": st.lists(st.text(min_size=1, max_size=3), max_size=2),
    "user": text,
}
good_bodies = {
    "/v1/chat/completions": {
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": text}),
            min_size=1,
            max_size=3,
        )
    },
    "/v1/completions": {"prompt": text | st.lists(text, min_size=1, max_size=2)},
    "/v1/embeddings": {"input": text | st.lists(text, min_size=1, max_size=3)},
}
FIELDS = sorted(
    {
        "model",
        "messages",
        "prompt",
        "input",
        "n",
        "response_format",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "encoding_format",
        "presence_penalty",
        "unknown_field",
        *good_fields,
    }
)


def good_body(endpoint: str) -> st.SearchStrategy[dict[str, Any]]:
    """A valid request: the model, the endpoint's input, and some valid options."""
    required = {"model": st.sampled_from(MODELS), **good_bodies[endpoint]}
    return st.fixed_dictionaries(required, optional=good_fields)


def with_one_bad_field(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The same request with one field replaced, or added, by any JSON value."""
    return st.tuples(st.sampled_from(FIELDS), json_values).map(lambda kv: {**body, kv[0]: kv[1]})


def requests(endpoint: str) -> st.SearchStrategy[dict[str, Any]]:
    good = good_body(endpoint)
    return good | good.flatmap(with_one_bad_field)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with gateway.client(timeout=10) as client:  # a hang fails the example
        yield client


def check_answer(response: httpx.Response, endpoint: str) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_valid("ErrorResponse", response.json())
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert sse_data(response.text)[-1] == "[DONE]", response.text
    else:
        schema = {
            "/v1/chat/completions": "CreateChatCompletionResponse",
            "/v1/completions": "CreateCompletionResponse",
            "/v1/embeddings": "CreateEmbeddingResponse",
        }[endpoint]
        assert_valid(schema, response.json())


@FUZZ
@given(data=st.data(), endpoint=st.sampled_from(ENDPOINTS))
def test_any_json_body_gets_a_clean_answer(
    client: httpx.Client, data: st.DataObject, endpoint: str
) -> None:
    body = data.draw(requests(endpoint))
    check_answer(client.post(endpoint, content=json.dumps(body)), endpoint)


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_any_bytes_get_a_clean_answer(client: httpx.Client, endpoint: str, raw: bytes) -> None:
    check_answer(client.post(endpoint, content=raw), endpoint)


def test_after_fuzzing_the_gateway_is_healthy_and_idle(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/ready").status_code == 200
    workers = gateway.workers()
    assert all(w["state"] == "ready" and w["in_flight"] == 0 for w in workers)
    assert all(w["restarts"] == 0 for w in workers)


def test_a_body_cannot_choose_a_path_url_or_worker(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "model_path": "/etc/passwd",
        "base_url": "http://203.0.113.1",
        "api_base": "x",
        "url": "http://127.0.0.1:1",
        "worker": 0,
        "port": 1,
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200 and response.json()["model"] == "chat"
    assert_valid("CreateChatCompletionResponse", response.json())
    response = client.post("/v1/chat/completions", json={**body, "model": "../../chat"})
    assert response.status_code == 404
