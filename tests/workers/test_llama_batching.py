"""A batching llama worker (4 slots over one SmolLM2) under concurrent requests: each gets what
it asked for, a cancelled one frees its slot at once, and greedy answers do not depend on what
else runs beside them. The single-request behaviour of the same worker is in test_llama_worker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support import SMOLLM2, assert_valid, wait_until
from tests.workers.support import WorkerProcess
from tests.workers.test_llama_worker import NO_EOS, llama_worker, record, stream_chunks

PROMPTS = [
    "Name three colours.",
    "Why is the sky blue?",
    "Describe a day in Paris.",
    "Give me a recipe for bread.",
]


@pytest.fixture(scope="module")
def batching() -> Iterator[WorkerProcess]:
    # KV split per slot (the default, said here because the greedy test below depends on
    # it): the layout in which an answer cannot depend on its neighbours.
    with llama_worker("batching", SMOLLM2, 4, kv_unified=False) as w:
        w.wait_ready()
        yield w


def chat(content: str, **options: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **options}


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def test_status_reports_four_slots(batching: WorkerProcess) -> None:
    body = batching.status()
    assert (body["capacity"], body["slots_busy"], body["n_ctx"]) == (4, 0, 512)
    assert set(body["batching"]) == {
        "steps",
        "sequences",
        "decoded_tokens",
        "generated_tokens",
        "mean_sequences",
        "decode_seconds",
    }


def test_four_concurrent_streams_with_different_settings_each_get_what_they_asked_for(
    batching: WorkerProcess,
) -> None:
    colours = ["red", "green", "blue"]
    schema = {"type": "object", "properties": {"colour": {"enum": colours}}, "required": ["colour"]}
    tool = {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string"}},
                "required": ["zone"],
            },
        },
    }
    # A stop string the greedy answer holds on this host (its text differs by CPU): its 4th word.
    greedy = batching.client.post(
        "/v1/chat/completions", json=chat(PROMPTS[1], max_tokens=24, temperature=0)
    ).json()
    stop = " " + greedy["choices"][0]["message"]["content"].split()[3]
    bodies = [
        chat(
            "Pick a colour.",
            max_tokens=40,
            temperature=0.9,
            seed=3,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
        ),
        chat(PROMPTS[1], max_tokens=24, temperature=0, stop=[stop]),
        chat(PROMPTS[2], max_tokens=20, temperature=0.7, top_p=0.5, logit_bias=NO_EOS),
        chat(
            "What time is it in Tokyo?",
            max_tokens=40,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        ),
    ]
    before = batching.status()["batching"]
    streams = run_together(
        [
            lambda b=b: stream_chunks(
                batching, "/v1/chat/completions", {**b, "stream_options": {"include_usage": True}}
            )
            for b in bodies
        ]
    )
    for chunks in streams:
        for chunk in chunks:
            assert_valid("CreateChatCompletionStreamResponse", chunk)
    json_answer, stopped, long_one, called = streams
    assert json.loads(streamed_text(json_answer))["colour"] in colours
    after = batching.status()["batching"]
    steps = after["steps"] - before["steps"]
    assert (after["sequences"] - before["sequences"]) / steps > 2  # the four decoded together
    assert (
        stop not in streamed_text(stopped) and stopped[-2]["choices"][0]["finish_reason"] == "stop"
    )
    assert long_one[-1]["usage"]["completion_tokens"] == 20
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in called if c["choices"]]
    arguments = "".join(call[0]["function"]["arguments"] for call in calls if call)
    assert "zone" in json.loads(arguments)
    served = [r for r in batching.status()["recent"] if r["endpoint"] == "/v1/chat/completions"]
    last = served[-4:]
    assert max(r["started"] for r in last) < min(r["finished"] for r in last)  # all at once


def test_a_cancelled_slot_frees_at_once_while_the_others_continue(
    batching: WorkerProcess,
) -> None:
    long = chat(PROMPTS[3], max_tokens=120, logit_bias=NO_EOS, stream=True)

    def read_all() -> dict[str, Any]:
        chunks = stream_chunks(
            batching, "/v1/chat/completions", {**long, "stream_options": {"include_usage": True}}
        )
        usage: dict[str, Any] = chunks[-1]["usage"]
        return usage

    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(read_all)
        headers = {"X-Request-Id": "to-cancel"}
        with batching.client.stream(
            "POST", "/v1/chat/completions", json=long, headers=headers
        ) as response:
            lines = response.iter_lines()
            next(lines), next(lines)  # the first event: it is generating
        closed = time.monotonic()
        cancelled = record(batching, "to-cancel")
        assert cancelled["outcome"] == "cancelled" and time.monotonic() - closed < 2
        assert not other.done()  # the other slot is still generating
        assert other.result(timeout=120)["completion_tokens"] == 120
    assert wait_until(lambda: batching.status()["slots_busy"] == 0, 5)


def test_greedy_answers_are_the_same_alone_and_beside_three_others(
    batching: WorkerProcess,
) -> None:
    def ask(content: str) -> str:
        body = chat(content, max_tokens=32, temperature=0, seed=7)
        answer = batching.client.post("/v1/chat/completions", json=body).json()
        text: str = answer["choices"][0]["message"]["content"]
        return text

    # How much of a prompt a slot has cached changes how it is split into batches, and that
    # alone can flip a greedy choice between two close tokens (as in llama-server). So first
    # each prompt is cached in a slot of its own; alone or together, each then goes back to
    # its slot and reads the same cached prefix: only the batching differs.
    for prompt in PROMPTS:
        ask(prompt)
    alone = [ask(prompt) for prompt in PROMPTS]
    together = run_together([lambda p=p: ask(p) for p in PROMPTS])
    assert together == alone


def test_a_conversation_s_next_turn_goes_back_to_the_slot_that_holds_its_beginning(
    batching: WorkerProcess,
) -> None:
    def ask(messages: list[dict[str, str]], request_id: str) -> tuple[str, int]:
        body = {"messages": messages, "max_tokens": 8, "temperature": 0}
        headers = {"X-Request-Id": request_id}
        answer = batching.client.post("/v1/chat/completions", json=body, headers=headers)
        slot: int = record(batching, request_id)["slot"]
        return answer.json()["choices"][0]["message"]["content"], slot

    first = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
    reply, slot = ask(first, "turn-1")
    # Two unrelated requests take two other slots; the fourth slot has now waited longest, so
    # least-recently-used alone would send the next turn there, away from its cached beginning.
    others = {
        ask([{"role": "user", "content": p}], f"other-{i}")[1] for i, p in enumerate(PROMPTS[:2])
    }
    assert slot not in others
    follow_up = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And then?"},
    ]
    assert ask(follow_up, "turn-2")[1] == slot
