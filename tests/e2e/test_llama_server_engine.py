"""End to end, `engine: llama-server`: llama.cpp's own server supervised as a replica, beside our
worker in one gateway. Real llama-server processes (`make llama-server` builds the binary), the
SmolLM2 demo model; every gateway feature alike for both engines."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.config.file import parse_config
from gateway.replicas.footprint import needs
from tests.support import (
    REPO,
    SMOLLM2,
    WORKER_SECRET,
    GatewayProcess,
    api_key,
    assert_error,
    assert_valid,
    assert_valid_completion_stream,
    running_gateway,
    sse_data,
    wait_until,
)

ADMIN, TEAM = "sk-admin-0123456789abcdef", "sk-team-0123456789abcdef"
LLAMA = {"n_ctx": 1024, "n_threads": 1}
# SmolLM2's own template renders no tools: one that does, given to llama-server as a flag.
TOOLS_TEMPLATE = REPO / "tests" / "data" / "chatml-tools.jinja"
CONFIG: dict[str, Any] = {
    "auth": {"keys": [api_key("ops", ADMIN, admin=True), api_key("team", TEAM, tpm=1_000_000)]},
    "memory": {"cpu": "8GiB", "0": "4GiB"},  # a budget for GPU 0: no nvidia-smi asked
    "models": [
        {"name": "ours", "path": str(SMOLLM2), "capacity": 2, "llama": LLAMA},
        {
            "name": "server",
            "engine": "llama-server",
            "path": str(SMOLLM2),
            "capacity": 2,
            "gpus": ["0"],
            "llama": LLAMA,
            "server_args": ["--chat-template-file", str(TOOLS_TEMPLATE)],
        },
        {
            "name": "server-embed",
            "engine": "llama-server",
            "path": str(SMOLLM2),
            "llama": {"n_ctx": 512, "n_threads": 1, "embedding": True},
        },
    ],
}
HELLO = [{"role": "user", "content": "Say hello in three words."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("mixed"), api_key=ADMIN)


def post(gateway: GatewayProcess, path: str, **body: Any) -> httpx.Response:
    return httpx.post(
        gateway.url + path, json=body, timeout=120, headers={"Authorization": f"Bearer {TEAM}"}
    )


def worker(gateway: GatewayProcess, model: str) -> dict[str, Any]:
    (found,) = [w for w in gateway.workers() if w["model"] == model]
    return found


def used(gateway: GatewayProcess) -> tuple[int, int]:
    """The team key's prompt and completion tokens so far (/admin/usage)."""
    with gateway.client() as client:
        rows = [r for r in client.get("/admin/usage").json()["data"] if r["key"] == "team"]
    return sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)


def chunks(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(data) for data in sse_data(response.text) if data != "[DONE]"]


def test_both_engines_answer_chat_side_by_side(mixed: GatewayProcess) -> None:
    for model in ("ours", "server"):
        answer = post(mixed, "/v1/chat/completions", model=model, messages=HELLO, max_tokens=8)
        assert answer.status_code == 200, answer.text
        assert_valid("CreateChatCompletionResponse", answer.json())
        assert answer.json()["usage"]["completion_tokens"] > 0
        assert answer.headers["x-request-id"]  # the gateway's own, for either engine
    states = {w["model"]: (w["state"], w["kind"]) for w in mixed.workers()}
    assert all(state == ("ready", "local") for state in states.values()), states


def test_a_llama_server_stream_is_valid_and_has_usage_only_when_asked(
    mixed: GatewayProcess,
) -> None:
    plain = chunks(
        post(
            mixed, "/v1/chat/completions", model="server", messages=HELLO, max_tokens=6, stream=True
        )
    )
    for chunk in plain:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert all(chunk["choices"] and "usage" not in chunk for chunk in plain)
    include = {"include_usage": True}
    asked = chunks(
        post(
            mixed,
            "/v1/chat/completions",
            model="server",
            messages=HELLO,
            max_tokens=6,
            stream=True,
            stream_options=include,
        )
    )
    assert asked[-1]["choices"] == [] and asked[-1]["usage"]["completion_tokens"] > 0
    completion = chunks(
        post(
            mixed,
            "/v1/completions",
            model="server",
            prompt="Once upon a",
            max_tokens=6,
            stream=True,
        )
    )
    assert_valid_completion_stream(completion)
    assert not any("usage" in chunk for chunk in completion)  # taken off its last chunk


def test_a_key_s_tokens_are_the_real_ones_streamed_or_not(mixed: GatewayProcess) -> None:
    exact = {"max_tokens": 5, "ignore_eos": True, "temperature": 0}  # 5 tokens, always
    before = used(mixed)
    chat = post(mixed, "/v1/chat/completions", model="server", messages=HELLO, **exact).json()
    chunks(
        post(mixed, "/v1/chat/completions", model="server", messages=HELLO, stream=True, **exact)
    )
    text = post(mixed, "/v1/completions", model="server", prompt="One two three", **exact).json()
    chunks(
        post(mixed, "/v1/completions", model="server", prompt="One two three", stream=True, **exact)
    )
    response = post(
        mixed, "/v1/responses", model="server", input="Hi", max_output_tokens=5, stream=True
    )
    assert response.status_code == 200 and '"error"' not in response.text  # ends as it should
    answered = json.loads(sse_data(response.text)[-1])["response"]["usage"]
    prompts = 2 * chat["usage"]["prompt_tokens"] + 2 * text["usage"]["prompt_tokens"]
    expected = (prompts + answered["input_tokens"], 4 * 5 + answered["output_tokens"])
    assert wait_until(
        lambda: used(mixed) == (before[0] + expected[0], before[1] + expected[1]), 5
    ), (used(mixed), before, expected)


def test_tools_reach_llama_server_through_its_template_and_a_tool_result_is_read(
    mixed: GatewayProcess,
) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    bare = post(mixed, "/v1/chat/completions", model="server", messages=ask, max_tokens=4)
    tooled = post(
        mixed,
        "/v1/chat/completions",
        model="server",
        messages=ask,
        max_tokens=4,
        tools=[WEATHER],
        tool_choice="auto",
    )
    assert_valid("CreateChatCompletionResponse", tooled.json())
    grown = tooled.json()["usage"]["prompt_tokens"] - bare.json()["usage"]["prompt_tokens"]
    assert grown > 40  # the function's signature was rendered into the prompt
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    history = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    answer = post(
        mixed,
        "/v1/chat/completions",
        model="server",
        messages=history,
        max_tokens=8,
        tools=[WEATHER],
    )
    assert answer.status_code == 200, answer.text
    assert_valid("CreateChatCompletionResponse", answer.json())


def test_embeddings_from_a_llama_server_embedding_model_and_a_400_from_another(
    mixed: GatewayProcess,
) -> None:
    answer = post(mixed, "/v1/embeddings", model="server-embed", input=["hello", "world"])
    assert answer.status_code == 200, answer.text
    assert_valid("CreateEmbeddingResponse", answer.json())
    vectors = [item["embedding"] for item in answer.json()["data"]]
    assert len(vectors) == 2 and len(vectors[0]) == 576 and vectors[0] != vectors[1]
    refused = assert_error(post(mixed, "/v1/embeddings", model="server", input="hello"), 400)
    assert "runs on llama-server" in refused["message"] and refused["param"] == "model"


def test_the_responses_api_passes_through_to_llama_server(mixed: GatewayProcess) -> None:
    with openai.OpenAI(base_url=mixed.url + "/v1", api_key=TEAM, max_retries=0) as client:
        response = client.responses.create(model="server", input="Hi", max_output_tokens=6)
    assert response.output_text and response.usage is not None
    assert response.usage.output_tokens > 0


def test_a_prompt_over_the_context_is_openai_s_context_length_exceeded(
    mixed: GatewayProcess,
) -> None:
    over = post(mixed, "/v1/completions", model="server", prompt="hello " * 1500, max_tokens=4)
    assert assert_error(over, 400, "context_length_exceeded")["type"] == "invalid_request_error"


def test_llama_server_s_metrics_are_exported_as_the_replica_s_engine_series(
    mixed: GatewayProcess,
) -> None:
    post(mixed, "/v1/chat/completions", model="server", messages=HELLO, max_tokens=4)

    def generated() -> float:
        text = httpx.get(mixed.url + "/metrics", timeout=10).text
        line = 'llm_gateway_replica_generated_tokens_total{model="server",replica="0"} '
        found = [row for row in text.splitlines() if row.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    assert wait_until(lambda: generated() >= 4, 10)  # read at the status checks (2 s)
    text = httpx.get(mixed.url + "/metrics", timeout=10).text
    for series in ("decode_steps", "batch_sequences", "decoded_tokens", "decode_seconds"):
        assert f'llm_gateway_replica_{series}_total{{model="server",replica="0"}}' in text


def test_each_llama_server_is_pinned_to_its_slot_s_gpus_and_holds_the_worker_secret(
    mixed: GatewayProcess,
) -> None:
    def environ(pid: int) -> dict[str, str]:
        pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(p.decode().partition("=")[::2] for p in pairs if b"=" in p)

    pinned, cpu = worker(mixed, "server"), worker(mixed, "server-embed")
    assert pinned["device"] == "0" and environ(pinned["pid"])["CUDA_VISIBLE_DEVICES"] == "0"
    assert environ(cpu["pid"])["CUDA_VISIBLE_DEVICES"] == ""  # a CPU replica sees no GPU
    assert environ(pinned["pid"])["LLAMA_API_KEY"] == WORKER_SECRET
    command = Path(f"/proc/{pinned['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"-ngl" in command and command[command.index(b"-ngl") + 1] == b"all"
    assert WORKER_SECRET.encode() not in b" ".join(command)  # not shown by ps


def test_a_llama_server_killed_is_restarted_and_serves_again(mixed: GatewayProcess) -> None:
    before = worker(mixed, "server-embed")
    os.kill(before["pid"], signal.SIGKILL)
    assert wait_until(
        lambda: (
            worker(mixed, "server-embed")["restarts"] == 1
            and worker(mixed, "server-embed")["state"] == "ready"
        ),
        60,
    )
    after = worker(mixed, "server-embed")
    assert after["pid"] != before["pid"] and after["last_exit"] == "SIGKILL, signal 9"
    assert post(mixed, "/v1/embeddings", model="server-embed", input="again").status_code == 200


# One model of each engine, on demand, in a RAM budget that holds one at a time: ours ~306 MiB,
# llama-server ~234 MiB (the same SmolLM2, 4 slots of 1024: a lighter process), 400 MiB.
ON_DEMAND: dict[str, Any] = {
    "memory": {"cpu": "400MiB"},
    "scaling": {"min_residency": 0, "spare_worker": False},
    "models": [
        {
            "name": name,
            "engine": engine,
            "path": str(SMOLLM2),
            "llama": LLAMA,
            "replicas": {"min": 0, "max": 1},
            "queue_timeout": 120,
        }
        for name, engine in (("ours", "llama"), ("server", "llama-server"))
    ],
}


@pytest.fixture(scope="module")
def on_demand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(
        ON_DEMAND, tmp_path_factory.mktemp("on-demand-server"), log=("--log-level", "info")
    )


def loaded(gateway: GatewayProcess) -> list[str]:
    return [w["model"] for w in gateway.workers() if w["state"] not in ("draining", "stopped")]


def test_a_llama_server_model_loads_on_demand_and_evicts_and_is_evicted(
    on_demand: GatewayProcess,
) -> None:
    assert loaded(on_demand) == []
    for model in ("server", "ours", "server"):
        answer = post(
            on_demand, "/v1/completions", model=model, prompt="hello " * 300, max_tokens=4
        )
        assert answer.status_code == 200, answer.text
        assert loaded(on_demand) == [model]
    log = on_demand.log_path.read_text()
    assert "server[0]: evicted (least recently used)" in log
    assert "ours[0]: evicted (least recently used)" in log
    (server,) = parse_config(ON_DEMAND, base_dir=Path.cwd()).models[1:]
    status = Path(f"/proc/{worker(on_demand, 'server')['pid']}/status").read_text()
    (rss,) = [
        int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")
    ]
    assert rss <= needs(server, "cpu")["cpu"] <= rss * 1.2  # the estimate eviction goes by
