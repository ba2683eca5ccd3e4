"""`tool_choice: "required"` with several tools: the model must call one of them.

llama-cpp-python forces a call only to one named function (a grammar over its arguments).
For "any of these", the answer is generated under one JSON schema that is the union of every
tool's call, `{"name": <that tool's name>, "arguments": <its parameters>}`, so whatever the
model writes is a valid call to exactly one tool; it is then returned as that tool call, as
OpenAI returns one. Pure functions; workers.engines.llama runs the generation.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from workers.errors import invalid_request

__all__ = ["REQUIRED", "as_tool_call", "call_schema"]

REQUIRED = "required"  # the tool_choice workers.api.tools leaves for the engine to honour


def call_schema(tools: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One JSON schema whose every instance is a call to one of `tools`."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["function"]["name"]},
                "arguments": tool["function"]["parameters"],
            },
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    return calls[0] if len(calls) == 1 else {"oneOf": calls}


def as_tool_call(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion whose content is such a call, as llama returns a forced tool call."""
    choice = (raw.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content") or ""
    try:
        call = json.loads(content)
        name, arguments = call["name"], call["arguments"]
    except (ValueError, TypeError, KeyError):
        # The grammar allows nothing else: only running out of tokens can leave it unfinished.
        raise invalid_request(
            "max_tokens ran out before the required tool call was complete; allow more tokens",
            "max_tokens",
        ) from None
    function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
    message = {
        "role": "assistant",
        "content": None,
        "function_call": function,
        "tool_calls": [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}
        ],
    }
    return {**raw, "choices": [{**choice, "message": message, "finish_reason": "tool_calls"}]}
