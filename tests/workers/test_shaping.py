"""Pure units: raw llama-cpp-python shapes -> OpenAI-schema-valid bodies."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import numpy as np
import pytest

from tests.support import assert_valid
from tests.workers.llama_shapes import (
    CALL,
    RAW_CHAT,
    RAW_COMPLETION,
    raw_chat_chunk,
    raw_tool_chat,
    raw_tool_delta,
)
from tests.workers.support import assert_valid_completion_chunk
from workers.api.shaping import (
    ChatStreamShaper,
    shape_chat,
    shape_chat_chunk,
    shape_completion,
    shape_completion_chunk,
    shape_embeddings,
    sse_event,
    usage_chunk,
)
from workers.api.tools import tool_call_chunks
from workers.wire import EmbeddingResult, Usage


def test_raw_chat_fails_the_official_schema() -> None:
    # The gap that shaping exists for: the raw message has no `refusal`.
    with pytest.raises(AssertionError, match="refusal"):
        assert_valid("CreateChatCompletionResponse", RAW_CHAT)


def test_shaped_chat_validates_with_refusal_null() -> None:
    body = shape_chat(RAW_CHAT, model="smol", id_="chatcmpl-abc")
    assert_valid("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["refusal"] is None


def test_shaped_chat_uses_configured_name_and_id() -> None:
    body = shape_chat(RAW_CHAT, model="smol", id_="chatcmpl-abc")
    assert (body["model"], body["id"]) == ("smol", "chatcmpl-abc")


def test_shaped_chat_without_raw_usage_takes_given_usage() -> None:
    raw = {k: v for k, v in RAW_CHAT.items() if k != "usage"}
    body = shape_chat(raw, model="m", id_="chatcmpl-1", usage=Usage(3, 4))
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_shaped_chat_replaces_null_finish_reason() -> None:
    raw = json.loads(json.dumps(RAW_CHAT))
    raw["choices"][0]["finish_reason"] = None
    body = shape_chat(raw, model="m", id_="chatcmpl-1")
    assert body["choices"][0]["finish_reason"] == "stop"


def test_chat_chunks_validate() -> None:
    for delta, finish in [({"role": "assistant"}, None), ({"content": "hi"}, None), ({}, "stop")]:
        chunk = shape_chat_chunk(
            raw_chat_chunk(delta, finish),
            model="m",
            id_="chatcmpl-1",
            created=5,
            include_usage=False,
        )
        assert_valid("CreateChatCompletionStreamResponse", chunk)


def test_chat_chunk_has_null_usage_only_when_usage_requested() -> None:
    raw = raw_chat_chunk({"content": "hi"}, None)
    with_usage = shape_chat_chunk(raw, model="m", id_="c", created=5, include_usage=True)
    without = shape_chat_chunk(raw, model="m", id_="c", created=5, include_usage=False)
    assert with_usage["usage"] is None
    assert "usage" not in without


def test_chat_chunk_drops_unknown_delta_keys() -> None:
    raw = raw_chat_chunk({"content": "x", "weird": 1}, None)
    chunk = shape_chat_chunk(raw, model="m", id_="c", created=5, include_usage=False)
    assert chunk["choices"][0]["delta"] == {"content": "x"}


def test_usage_chunk_has_no_choices_and_validates() -> None:
    chunk = usage_chunk(Usage(5, 2), object_="chat.completion.chunk", model="m", id_="c", created=1)
    assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunk["choices"] == []
    assert chunk["usage"]["total_tokens"] == 7


def test_completion_usage_chunk_validates() -> None:
    chunk = usage_chunk(Usage(5, 2), object_="text_completion", model="m", id_="c", created=1)
    assert_valid("CreateCompletionResponse", chunk)


def test_completion_of_several_prompts_renumbers_and_sums() -> None:
    body = shape_completion([RAW_COMPLETION, RAW_COMPLETION], model="g", id_="cmpl-9")
    assert_valid("CreateCompletionResponse", body)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}


def test_last_completion_chunk_validates() -> None:
    raw = json.loads(json.dumps(RAW_COMPLETION))
    chunk = shape_completion_chunk(raw, model="g", id_="cmpl-9", created=1)
    assert_valid("CreateCompletionResponse", chunk)


def test_intermediate_completion_chunk_keeps_null_finish_reason() -> None:
    # OpenAI sends null before the last chunk; the schema's only complaint is that field.
    raw = json.loads(json.dumps(RAW_COMPLETION))
    raw["choices"][0]["finish_reason"] = None
    chunk = shape_completion_chunk(raw, model="g", id_="cmpl-9", created=1)
    assert chunk["choices"][0]["finish_reason"] is None
    assert_valid_completion_chunk(chunk)


def test_embeddings_validate_as_floats() -> None:
    result = EmbeddingResult([[0.5, -1.0], [0.25, 2.0]], prompt_tokens=3)
    body = shape_embeddings(result, model="e", encoding_format="float")
    assert_valid("CreateEmbeddingResponse", body)
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_embeddings_base64_is_little_endian_float32() -> None:
    result = EmbeddingResult([[0.5, -1.0, 3.25]], prompt_tokens=1)
    body = shape_embeddings(result, model="e", encoding_format="base64")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -1.0, 3.25)


def test_sse_event_is_one_data_line_and_blank_line() -> None:
    event = sse_event({"a": "x\ny"})
    assert event == b'data: {"a":"x\\ny"}\n\n'


# Logprobs and tool calls (raw shapes copied from real SmolLM2 runs).


def raw_token(token: str, logprob: float, tops: list[tuple[str, float]]) -> dict[str, Any]:
    return {
        "token": token,
        "bytes": None,
        "logprob": np.float32(logprob),
        "top_logprobs": [{"token": t, "logprob": np.float32(p), "bytes": None} for t, p in tops],
    }


def raw_chat_with_logprobs() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(json.dumps(RAW_CHAT))
    # llama lists the top N and then the sampled token when it is not among them.
    token = raw_token("Hello", -2.5, [("Hi", -0.5), ("Hey", -1.0), ("Hello", -2.5)])
    raw["choices"][0]["logprobs"] = {"content": [token], "refusal": None}
    return raw


def test_chat_logprobs_validate_and_serialise() -> None:
    body = shape_chat(raw_chat_with_logprobs(), model="m", id_="c", top_logprobs=2)
    assert_valid("CreateChatCompletionResponse", json.loads(json.dumps(body)))


def test_chat_top_logprobs_are_exactly_the_top_n() -> None:
    body = shape_chat(raw_chat_with_logprobs(), model="m", id_="c", top_logprobs=2)
    tops = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert [t["token"] for t in tops] == ["Hi", "Hey"]


def test_chat_logprob_bytes_are_utf8() -> None:
    raw = raw_chat_with_logprobs()
    raw["choices"][0]["logprobs"]["content"][0]["token"] = "é"
    body = shape_chat(raw, model="m", id_="c", top_logprobs=0)
    assert body["choices"][0]["logprobs"]["content"][0]["bytes"] == [0xC3, 0xA9]


def test_chat_logprobs_are_null_when_not_requested() -> None:
    body = shape_chat(raw_chat_with_logprobs(), model="m", id_="c")
    assert body["choices"][0]["logprobs"] is None


def test_streamed_chat_chunk_keeps_its_logprobs() -> None:
    raw = raw_chat_chunk({"content": "Hello"}, None)
    raw["choices"][0]["logprobs"] = raw_chat_with_logprobs()["choices"][0]["logprobs"]
    shaper = ChatStreamShaper(model="m", id_="c", created=1, include_usage=False, top_logprobs=1)
    chunk = shaper.chunk(raw)
    assert_valid("CreateChatCompletionStreamResponse", json.loads(json.dumps(chunk)))
    assert len(chunk["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 1


def test_completion_logprobs_validate_with_plain_floats() -> None:
    raw = json.loads(json.dumps(RAW_COMPLETION))
    raw["choices"][0]["logprobs"] = {
        "tokens": [" 4"],
        "text_offset": [8],
        "token_logprobs": [np.float32(-0.1)],
        "top_logprobs": [{" 4": np.float32(-0.1), " 5": np.float32(-3.6)}],
    }
    body = shape_completion([raw], model="g", id_="cmpl-1")
    assert_valid("CreateCompletionResponse", json.loads(json.dumps(body)))


def test_tool_call_message_validates_as_openai_sends_it() -> None:
    body = shape_chat(raw_tool_chat(), model="m", id_="c")
    assert_valid("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [CALL],
    }


def test_tool_call_finish_reason_is_tool_calls() -> None:
    raw = raw_tool_chat()
    raw["choices"][0]["finish_reason"] = "stop"
    body = shape_chat(raw, model="m", id_="c")
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_legacy_functions_get_function_call_only() -> None:
    body = shape_chat(raw_tool_chat(), model="m", id_="c", legacy_functions=True)
    assert_valid("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert (message["function_call"], "tool_calls" in message) == (CALL["function"], False)


def test_legacy_function_call_finish_reason() -> None:
    body = shape_chat(raw_tool_chat(), model="m", id_="c", legacy_functions=True)
    assert body["choices"][0]["finish_reason"] == "function_call"


def stream_shaper(legacy: bool = False) -> ChatStreamShaper:
    return ChatStreamShaper(
        model="m", id_="c", created=1, include_usage=False, legacy_functions=legacy
    )


def test_streamed_tool_call_is_named_once_then_arguments_only() -> None:
    shaper = stream_shaper()
    first = shaper.chunk(raw_chat_chunk(raw_tool_delta('{"city"'), None))
    second = shaper.chunk(raw_chat_chunk(raw_tool_delta(': "Paris"}'), None))
    assert first["choices"][0]["delta"] == {
        "tool_calls": [
            {
                "index": 0,
                "id": CALL["id"],
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city"'},
            }
        ]
    }
    assert second["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"}'}}]
    }


def test_streamed_tool_call_chunks_validate() -> None:
    shaper = stream_shaper()
    raws = [
        raw_chat_chunk({"role": "assistant", "content": None, "tool_calls": None}, None),
        raw_chat_chunk(raw_tool_delta("{}"), None),
        raw_chat_chunk({"role": None, "content": None, "tool_calls": None}, "tool_calls"),
    ]
    for raw in raws:
        assert_valid("CreateChatCompletionStreamResponse", shaper.chunk(raw))


def test_streamed_legacy_function_call_delta() -> None:
    shaper = stream_shaper(legacy=True)
    shaper.chunk(raw_chat_chunk(raw_tool_delta("{"), None))
    second = shaper.chunk(raw_chat_chunk(raw_tool_delta("}"), None))
    assert second["choices"][0]["delta"] == {"function_call": {"arguments": "}"}}


def test_streamed_legacy_finish_reason_is_function_call() -> None:
    chunk = stream_shaper(legacy=True).chunk(raw_chat_chunk({}, "tool_calls"))
    assert chunk["choices"][0]["finish_reason"] == "function_call"


def test_replayed_tool_call_chunks_carry_the_whole_call() -> None:
    shaper = stream_shaper()
    chunks = [shaper.chunk(c) for c in tool_call_chunks(raw_tool_chat())]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunks[1]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, **CALL}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
