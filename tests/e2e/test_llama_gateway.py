"""End to end: the real gateway, real llama-cpp workers on the demo models, the official client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.pool import LLAMA
from tests.support import (
    SMOLLM2,
    GatewayProcess,
    assert_valid,
    assert_valid_completion_stream,
    pid_alive,
    running_gateway,
    sse_data,
    wait_until,
)

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello in three words."}]


@pytest.fixture
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with gateway.client() as http:
        yield http


def test_models_lists_every_name_and_alias(client: openai.OpenAI, http: httpx.Client) -> None:
    assert {m.id for m in client.models.list()} == {
        "smollm2",
        "gpt-3.5-turbo",
        "gemma3-270m",
        "smollm2-embed",
    }
    assert_valid("ListModelsResponse", http.get("/v1/models").json())


def test_chat_answers_with_a_valid_body_and_usage(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2",
        messages=HELLO,
        max_tokens=8,
    )
    assert_valid("CreateChatCompletionResponse", raw.http_response.json())
    completion = raw.parse()
    assert completion.model == "smollm2"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.prompt_tokens > 5


def test_chat_by_alias_is_served_by_the_same_pool(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=HELLO,
        max_tokens=4,
    )
    assert completion.model == "smollm2"


def test_chat_stream_chunks_are_valid_and_end_with_usage(http: httpx.Client) -> None:
    body = {
        "model": "smollm2",
        "messages": HELLO,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_data(http.post("/v1/chat/completions", json=body).text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text.strip()


def test_the_official_client_streams_chat(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=HELLO,
        max_tokens=8,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces).strip()


def test_completions_on_the_base_model(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="gemma3-270m", prompt="The capital of France is", max_tokens=6
    )
    assert_valid("CreateCompletionResponse", raw.http_response.json())
    completion = raw.parse()
    assert completion.choices[0].text and completion.usage is not None
    assert completion.usage.completion_tokens > 0


def test_completions_stream_is_valid(http: httpx.Client) -> None:
    body = {"model": "gemma3-270m", "prompt": "One, two,", "max_tokens": 6, "stream": True}
    events = sse_data(http.post("/v1/completions", json=body).text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert_valid_completion_stream(chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_embeddings_one_vector_per_input(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="smollm2-embed",
        input=["hello world", "a longer sentence about cats"],
        encoding_format="float",
    )
    assert_valid("CreateEmbeddingResponse", raw.http_response.json())
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == len(result.data[1].embedding) > 100
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0


def test_tool_choice_required_over_two_tools_calls_one(client: openai.OpenAI) -> None:
    def function(name: str, field: str) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": name,
                "parameters": {
                    "type": "object",
                    "properties": {field: {"type": "string"}},
                    "required": [field],
                },
            },
        }

    reply = client.chat.completions.create(  # type: ignore[call-overload]
        model="smollm2",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[function("get_weather", "city"), function("get_time", "zone")],
        tool_choice="required",
        max_tokens=48,
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name in ("get_weather", "get_time")
    assert json.loads(call.function.arguments)
    assert reply.choices[0].finish_reason == "tool_calls"


def test_the_responses_api_answers_streamed_and_not(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="smollm2", input="Say hello.", instructions="Be brief.", max_output_tokens=8
    )
    assert_valid("Response", raw.http_response.json())
    assert raw.parse().output_text
    events = list(
        client.responses.create(
            model="smollm2", input="Say hello.", max_output_tokens=8, stream=True
        )
    )
    for event in events:
        assert_valid("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
    assert events[-1].type in ("response.completed", "response.incomplete")
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed and streamed == events[-1].response.output_text


def test_the_responses_api_follows_a_json_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    reply = client.responses.create(
        model="smollm2",
        input="Is the sky blue? Answer in JSON.",
        max_output_tokens=16,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
    )
    assert isinstance(json.loads(reply.output_text)["ok"], bool)


RESPONSE_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {
        "type": "function",
        "name": "get_time",
        "description": "The time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
]


def test_the_responses_api_calls_one_of_two_tools_and_reads_its_output(
    client: openai.OpenAI,
) -> None:
    question = "What is the weather in Paris?"
    raw = client.responses.with_raw_response.create(
        model="smollm2",
        input=question,
        tools=RESPONSE_TOOLS,
        tool_choice="required",
        max_output_tokens=48,
    )
    assert_valid("Response", raw.http_response.json())
    (call,) = raw.parse().output
    assert call.type == "function_call" and call.name in ("get_weather", "get_time")
    assert json.loads(call.arguments)
    history: Any = [
        {"role": "user", "content": question},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
    ]
    reply = client.responses.create(
        model="smollm2", input=history, tools=RESPONSE_TOOLS, max_output_tokens=16
    )
    assert reply.output_text and reply.output[0].type == "message"


def test_the_responses_api_streams_a_tool_call(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="smollm2",
            input="What time is it in Tokyo?",
            tools=RESPONSE_TOOLS,
            tool_choice={"type": "function", "name": "get_time"},
            max_output_tokens=32,
            stream=True,
        )
    )
    for event in events:
        assert_valid("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.name == "get_time" and "zone" in json.loads(done.arguments)
    (call,) = events[-1].response.output
    assert call.type == "function_call" and call.arguments == done.arguments


def test_n_choices_come_back_as_n_whole_answers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hi"}], n=2, max_tokens=4
    )
    assert_valid("CreateChatCompletionResponse", raw.http_response.json())
    reply = raw.parse()
    assert [choice.index for choice in reply.choices] == [0, 1]
    assert all(choice.message.content for choice in reply.choices)


def test_embeddings_never_come_back_another_size_or_from_foreign_token_ids(
    client: openai.OpenAI,
) -> None:
    """SmolLM2 is no Matryoshka model, and LangChain sends OpenAI's token ids by default."""
    with pytest.raises(openai.BadRequestError) as cut:
        client.embeddings.create(model="smollm2-embed", input="hello", dimensions=8)
    assert "cannot be shortened" in str(cut.value)
    with pytest.raises(openai.BadRequestError) as ids:
        client.embeddings.create(model="smollm2-embed", input=[[15339, 1917]])
    assert "check_embedding_ctx_length=False" in str(ids.value)


def test_a_prompt_over_the_context_is_400_context_length_exceeded(client: openai.OpenAI) -> None:
    long_prompt = "word " * 3000
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gemma3-270m", prompt=long_prompt, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.code == "model_not_found"


def test_bad_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert_valid("ErrorResponse", response.json())


def records(gateway: GatewayProcess, model: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """Every recent request of `model`'s workers, by request id, with its replica index."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for worker in gateway.workers():
        if worker["model"] == model:
            for record in gateway.worker_status(model, worker["replica"])["recent"]:
                found[record["id"]] = (worker["replica"], record)
    return found


def test_two_requests_run_at_once_on_two_replicas(
    gateway: GatewayProcess, client: openai.OpenAI
) -> None:
    def ask(request_id: str) -> None:
        client.chat.completions.create(
            model="smollm2",
            messages=HELLO,
            max_tokens=24,
            extra_headers={"X-Request-Id": request_id},
        )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ask, ["parallel-a", "parallel-b"]))
    seen = records(gateway, "smollm2")
    (replica_a, a), (replica_b, b) = seen["parallel-a"], seen["parallel-b"]
    assert replica_a != replica_b
    assert a["started"] < b["finished"] and b["started"] < a["finished"], (a, b)


def test_one_replica_with_capacity_two_serves_two_requests_at_once(tmp_path: Path) -> None:
    config = {
        "models": [
            {"name": "s", "path": str(SMOLLM2), "capacity": 2, "llama": {**LLAMA, "n_threads": 2}}
        ]
    }
    with contextmanager(running_gateway)(config, tmp_path) as gateway:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)

        def ask(request_id: str) -> str:
            reply = client.chat.completions.create(
                model="s",
                messages=HELLO,
                max_tokens=24,
                temperature=0,
                extra_headers={"X-Request-Id": request_id},
            )
            return reply.choices[0].message.content or ""

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(ask, ["slot-a", "slot-b"]))
        # Not necessarily the same text: with the unified KV buffer (the default) a greedy
        # answer's last logit bits depend on its neighbours (docs/engines.md, "Slots").
        assert all(answers)
        seen = records(gateway, "s")
        (replica_a, a), (replica_b, b) = seen["slot-a"], seen["slot-b"]
        assert replica_a == replica_b == 0 and len(gateway.workers()) == 1
        assert a["started"] < b["finished"] and b["started"] < a["finished"], (a, b)


def worker_facts(gateway: GatewayProcess) -> dict[tuple[str, int], tuple[int, float, int]]:
    """(pid, the worker's own load time, restarts) of every replica of the two chat models."""
    return {
        (w["model"], w["replica"]): (
            w["pid"],
            gateway.worker_status(w["model"], w["replica"])["loaded_at"],
            w["restarts"],
        )
        for w in gateway.workers()
        if w["model"] in ("smollm2", "gemma3-270m")
    }


def test_alternating_between_models_loads_each_only_once(
    gateway: GatewayProcess, client: openai.OpenAI
) -> None:
    before = worker_facts(gateway)
    served_before = gateway.worker_status("gemma3-270m", 0)["requests_served"]
    for i in range(20):
        if i % 2:
            client.completions.create(model="gemma3-270m", prompt=f"Count {i}:", max_tokens=4)
        else:
            client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": f"Number {i}?"}],
                max_tokens=4,
            )
    assert worker_facts(gateway) == before
    assert gateway.worker_status("gemma3-270m", 0)["requests_served"] - served_before == 10


def test_a_client_gone_mid_stream_frees_the_replica(
    gateway: GatewayProcess, http: httpx.Client
) -> None:
    body = {"model": "gemma3-270m", "prompt": "Once upon a time", "max_tokens": 400, "stream": True}
    with http.stream(
        "POST", "/v1/completions", json=body, headers={"X-Request-Id": "llama-walked-away"}
    ) as response:
        assert next(response.iter_lines()).startswith("data: ")
    left_at = time.time()
    assert wait_until(lambda: all(w["in_flight"] == 0 for w in gateway.workers()), 10)
    done = http.post(
        "/v1/completions",
        json={"model": "gemma3-270m", "prompt": "Hi", "max_tokens": 2},
        headers={"X-Request-Id": "after"},
    )
    assert done.status_code == 200
    seen = records(gateway, "gemma3-270m")
    gone, after = seen["llama-walked-away"][1], seen["after"][1]
    assert gone["outcome"] == "cancelled"
    assert gone["finished"] - left_at < 2.0  # 400 tokens would have taken far longer
    assert after["started"] >= gone["finished"]


def test_a_client_gone_before_a_non_streamed_answer_frees_the_replica(
    gateway: GatewayProcess,
) -> None:
    body = {"model": "gemma3-270m", "prompt": "Once upon a time", "max_tokens": 400}
    with pytest.raises(httpx.ReadTimeout), gateway.client(timeout=0.5) as impatient:
        impatient.post("/v1/completions", json=body, headers={"X-Request-Id": "gave-up"})
    left_at = time.time()
    assert wait_until(lambda: all(w["in_flight"] == 0 for w in gateway.workers()), 10)
    gone = records(gateway, "gemma3-270m")["gave-up"][1]
    assert gone["outcome"] == "cancelled"
    assert gone["finished"] - left_at < 2.0


def test_a_client_gone_before_the_first_token_of_a_stream_stops_the_generation(
    gateway: GatewayProcess,
) -> None:
    # A long prompt: the worker is still evaluating it (no byte sent) when the client leaves.
    body = {
        "model": "gemma3-270m",
        "prompt": "Tell me more. " * 150,
        "max_tokens": 300,
        "stream": True,
    }
    with pytest.raises(httpx.ReadTimeout), gateway.client(timeout=0.3) as impatient:
        impatient.post("/v1/completions", json=body, headers={"X-Request-Id": "left-early"})
    assert wait_until(lambda: all(w["in_flight"] == 0 for w in gateway.workers()), 15)
    assert wait_until(lambda: "left-early" in records(gateway, "gemma3-270m"), 15)
    assert wait_until(lambda: records(gateway, "gemma3-270m")["left-early"][1]["finished"], 15)
    gone = records(gateway, "gemma3-270m")["left-early"][1]
    assert gone["outcome"] == "cancelled", gone
    with gateway.client() as client:
        hi = {"model": "gemma3-270m", "prompt": "Hi", "max_tokens": 2}
        done = client.post("/v1/completions", json=hi)
    assert done.status_code == 200


def test_sigkill_of_the_gateway_leaves_no_llama_worker(tmp_path: Path) -> None:
    config = {"models": [{"name": "s", "path": str(SMOLLM2), "llama": LLAMA}]}
    gateway = GatewayProcess(config, tmp_path).start()
    pids = [w["pid"] for w in gateway.workers()]
    assert gateway.proc is not None and pids
    gateway.proc.kill()
    gateway.proc.wait()
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 10), pids
