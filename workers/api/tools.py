"""Tool calling: parse OpenAI's `tools`/`tool_choice` (and legacy `functions`/`function_call`),
and shape the tool calls llama-cpp-python 0.3.36 returns exactly as OpenAI sends them.

What llama-cpp-python does with the request (it converts legacy functions to tools itself, but
we do it here so every format sees one vocabulary):

- Any template-based format (the GGUF's own Jinja chat template, e.g. SmolLM2's, or a named
  format such as `chatml`): `tools` and `tool_choice` are handed to the template, which may
  render them or not (SmolLM2's and Gemma 3's ignore them). A `tool_choice` naming a function
  makes llama constrain the output with a grammar built from that function's `parameters` and
  return it as a tool call (streaming too). `"auto"`/`"none"` give a plain text answer: these
  templates have no way to let the model choose a call. That is a valid OpenAI answer to
  "auto", so the request passes through rather than failing.
- `chat_format: chatml-function-calling`: tools are listed in the system prompt; a named
  function is forced as above; `"auto"` lets the model choose between a message and one or
  more calls (see `workers.engines.llama` for the two llama bugs worked around there).
- `"required"` is not implemented by llama-cpp-python (chatml-function-calling asserts, the
  template formats ignore it). With exactly one tool it is the same as naming that tool, so it
  is rewritten to that; with several the engine generates under the union of the tools' calls
  (workers.api.required_call).

Responses: llama returns both `tool_calls` and `function_call` and repeats id/name in every
streamed delta. OpenAI answers a `tools` request with `tool_calls` only (`content: null`,
`finish_reason: "tool_calls"`) and a legacy `functions` request with `function_call` only
(`finish_reason: "function_call"`); a stream names the call (id, type, name) once per index and
then sends only argument pieces. `ToolCallDeltas` keeps that per-stream state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.errors import invalid_request

__all__ = [
    "ToolCallDeltas",
    "ToolRequest",
    "check_message_tools",
    "message_tool_fields",
    "parse_tools",
    "tool_call_chunks",
]

# OpenAI's rule for function names; it also keeps names safe inside llama's GBNF grammars.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolRequest:
    # Keyword arguments for create_chat_completion: `tools` and `tool_choice`, or nothing.
    options: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False  # the client sent `functions`: answer with `function_call`


def parse_tools(body: Mapping[str, Any]) -> ToolRequest:
    if body.get("tools") and body.get("functions"):
        raise invalid_request("send either 'tools' or the legacy 'functions', not both", "tools")
    if body.get("functions"):
        functions = _list(body["functions"], "functions")
        tools = [_tool({"type": "function", "function": f}, "functions") for f in functions]
        choice = _legacy_choice(body.get("function_call"))
        return ToolRequest(_options(tools, choice, "function_call"), legacy=True)
    tools = [_tool(t, "tools") for t in _list(body.get("tools") or [], "tools")]
    return ToolRequest(_options(tools, body.get("tool_choice"), "tool_choice"))


def _list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_request(f"'{param}' must be an array", param)
    return value


def _tool(tool: Any, param: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or not isinstance(function, dict)
    ):
        raise invalid_request(f"each of '{param}' must be a function tool", param)
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid_request(f"function names must match {_NAME.pattern}", param)
    parameters = function.get("parameters", _EMPTY_PARAMETERS)
    if not isinstance(parameters, dict):
        raise invalid_request(f"'{name}' parameters must be a JSON schema object", param)
    # llama reads `parameters` unconditionally; OpenAI lets it be omitted (no arguments).
    return {"type": "function", "function": {**function, "parameters": parameters}}


def _legacy_choice(call: Any) -> Any:
    if isinstance(call, dict):
        return {"type": "function", "function": {"name": call.get("name")}}
    return call


def _options(tools: list[dict[str, Any]], choice: Any, param: str) -> dict[str, Any]:
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise invalid_request("function names must be unique", param)
    choice = "auto" if choice is None else choice  # OpenAI's default once tools are given
    if choice == "required" and len(names) == 1:
        choice = {"type": "function", "function": {"name": names[0]}}
    if choice in ("auto", "none"):
        return {"tools": tools, "tool_choice": choice} if tools else {}
    if choice == "required":
        if not tools:
            raise invalid_request("tool_choice 'required' needs at least one tool", param)
        return {"tools": tools, "tool_choice": "required"}  # workers.api.required_call
    name = _chosen_name(choice, param)
    if name not in names:
        raise invalid_request(f"{param} names '{name}', which is not among the tools", param)
    return {"tools": tools, "tool_choice": {"type": "function", "function": {"name": name}}}


def _chosen_name(choice: Any, param: str) -> str:
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise invalid_request(
            f"'{param}' must be 'none', 'auto', 'required' or name a function", param
        )
    return name


def check_message_tools(message: Mapping[str, Any], param: str) -> None:
    """Assistant `tool_calls` and `tool` results in the history, as templates will read them."""
    if message.get("role") == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_request(f"{param}.tool_call_id is required", f"{param}.tool_call_id")
    calls = message.get("tool_calls")
    if calls is None:
        return
    if message.get("role") != "assistant" or not isinstance(calls, list):
        raise invalid_request(f"{param}.tool_calls must be an assistant's array", param)
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(function, dict)
            and isinstance(call.get("id"), str)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        ):
            raise invalid_request(
                f"{param}.tool_calls items need id, function.name and function.arguments",
                f"{param}.tool_calls",
            )


def _call(raw: Any) -> dict[str, Any] | None:
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None
    arguments = function.get("arguments")
    return {
        "id": str(raw.get("id") or ""),
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": arguments if isinstance(arguments, str) else "",
        },
    }


def message_tool_fields(raw_message: Mapping[str, Any], legacy: bool) -> dict[str, Any]:
    """The message keys for llama's tool calls: `tool_calls`, or `function_call` if legacy."""
    calls = [c for c in map(_call, raw_message.get("tool_calls") or []) if c is not None]
    if not calls:
        return {}
    if legacy:
        return {"function_call": calls[0]["function"]}
    return {"tool_calls": calls}


class ToolCallDeltas:
    """Per-stream state: name each call once (first delta of its index), then arguments only."""

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy
        self._named: set[int] = set()

    def fields(self, raw_delta: Mapping[str, Any]) -> dict[str, Any]:
        found = (self._item(i, c) for i, c in enumerate(raw_delta.get("tool_calls") or []))
        items = [item for item in found if item is not None]
        if not items:
            return {}
        if self.legacy:
            return {"function_call": items[0]["function"]}
        return {"tool_calls": items}

    def _item(self, position: int, raw: Any) -> dict[str, Any] | None:
        call = _call(raw)
        if call is None:
            return None
        index = raw.get("index", position)
        index = index if isinstance(index, int) else position
        arguments = call["function"]["arguments"]
        if index in self._named:
            return {"index": index, "function": {"arguments": arguments}}
        self._named.add(index)
        return {"index": index, **call}


def tool_call_chunks(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A finished chat completion replayed as raw stream chunks (role, calls, finish)."""
    choice = (raw.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = [
        {"index": i, **call}
        for i, call in enumerate(message.get("tool_calls") or [])
        if isinstance(call, dict)
    ]
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": None}, None),
        ({"tool_calls": calls}, None),
        ({}, choice.get("finish_reason") or "tool_calls"),
    ]
    base = {k: raw.get(k) for k in ("id", "created", "model")}
    return [
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}],
        }
        for d, f in deltas
    ]
