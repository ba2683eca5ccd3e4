"""What llama-cpp-python 0.3.36 returns, for the pure shaping tests (copied from real runs)."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "CALL",
    "RAW_CHAT",
    "RAW_COMPLETION",
    "raw_chat_chunk",
    "raw_tool_chat",
    "raw_tool_delta",
]

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


CALL = {
    "id": "call__0_get_weather_cmpl-1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
# llama returns both forms, and a function_call name with a stray colon in "auto" mode.
RAW_TOOL_MESSAGE = {
    "role": "assistant",
    "content": None,
    "tool_calls": [CALL],
    "function_call": {"name": "get_weather:", "arguments": '{"city": "Paris"}'},
}


def raw_tool_chat() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(json.dumps(RAW_CHAT))
    raw["choices"][0].update(message=RAW_TOOL_MESSAGE, finish_reason="tool_calls")
    return raw


def raw_tool_delta(arguments: str) -> dict[str, Any]:
    function = {"name": "get_weather", "arguments": arguments}
    return {
        "role": None,
        "content": None,
        "function_call": function,
        "tool_calls": [{"index": 0, "id": CALL["id"], "type": "function", "function": function}],
    }
