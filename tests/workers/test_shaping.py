"""Pure units: raw llama-cpp-python shapes -> OpenAI-schema-valid bodies."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from tests.support import assert_valid
from tests.workers.support import assert_valid_completion_chunk
from workers.engine import EmbeddingResult, Usage
from workers.shaping import (
    shape_chat,
    shape_chat_chunk,
    shape_completion,
    shape_completion_chunk,
    shape_embeddings,
    sse_event,
    usage_chunk,
)

# What llama-cpp-python 0.3.36 returns (copied from a real SmolLM2 run).
RAW_CHAT = {
    "id": "chatcmpl-fe7a8662-4d7b-4834-9fcd-234072fb5ef6",
    "object": "chat.completion",
    "created": 1795653073,
    "model": "/models/SmolLM2.gguf",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "logprobs": None,
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 32, "completion_tokens": 8, "total_tokens": 40},
}
RAW_COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1795653074,
    "model": "/models/x.gguf",
    "choices": [{"text": "-up", "index": 0, "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
}


def raw_chat_chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "/m.gguf",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


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
