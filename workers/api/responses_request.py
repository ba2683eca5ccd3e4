"""A Responses API request (`POST /v1/responses`) as the chat request it amounts to.

`instructions` becomes the system message and `input` the turns: message items as messages,
`function_call` items as the assistant's tool calls, `function_call_output` items as `tool`
messages. Function tools are re-nested the chat way (`{"type": "function", "function": {...}}`)
and `tool_choice` with them; `max_output_tokens`, `temperature`, `top_p` and `text.format` map
to their chat names. The chat parser then checks everything once, as for `/v1/chat/completions`.

Not served (a 400 that says so): tools other than functions (web search, file search, MCP...),
non-text content, `previous_response_id` and `conversation` (responses are not stored: every
Response says `store: false`, so a client sends the whole conversation each time), `prompt`
(stored prompt templates) and `background: true` (nothing runs after its request ends).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.api.params import ChatParams, parse_chat
from workers.errors import invalid_request

__all__ = ["ResponseMeta", "parse_response_request"]

_ROLES = {"user", "assistant", "system", "developer"}
_TEXT_PARTS = {"input_text", "output_text", "text"}
_CHOICE_MODES = {"auto", "none", "required"}


@dataclass
class ResponseMeta:
    """What a Response echoes of its request, and its ids."""

    model: str
    instructions: str | None
    temperature: float
    top_p: float
    max_output_tokens: int | None
    text_format: dict[str, Any]
    metadata: dict[str, Any]
    tools: list[dict[str, Any]] = field(default_factory=list)  # as the request gave them
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    created_at: int = field(default_factory=lambda: int(time.time()))


# Fields that need state this server does not keep: each a 400 saying why, never ignored.
_UNSERVED = {
    "previous_response_id": "previous_response_id is not supported: responses are not stored "
    "here; send the whole conversation as 'input'",
    "conversation": "conversation is not supported: conversations are not stored here; send "
    "the whole conversation as 'input'",
    "prompt": "prompt (a stored prompt template) is not supported: send its text as "
    "'instructions' and 'input'",
}


def parse_response_request(body: Mapping[str, Any], model: str) -> tuple[ChatParams, ResponseMeta]:
    """Chat parameters for a Responses request, and what its Response echoes."""
    for name, why in _UNSERVED.items():
        if body.get(name) is not None:
            raise invalid_request(why, name)
    if body.get("background"):
        why = "background is not supported: a response is generated while its request waits"
        raise invalid_request(why + " (stream it for early output)", "background")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid_request("'instructions' must be a string", "instructions")
    system = [{"role": "system", "content": instructions}] if instructions else []
    text_format = _text_format(body.get("text"))
    chat = {
        "messages": system + _turns(body.get("input")),
        "stream": bool(body.get("stream")),
        **_chat_options(body, text_format),
        **_chat_tools(body),
    }
    params = parse_chat(chat)
    return params, _meta(body, model, params, text_format)


def _meta(
    body: Mapping[str, Any], model: str, params: ChatParams, text_format: dict[str, Any]
) -> ResponseMeta:
    given, tools = body.get("metadata"), [_echoed_tool(t) for t in body.get("tools") or []]
    return ResponseMeta(
        model,
        body.get("instructions"),
        float(params.options.get("temperature", 1.0)),
        float(params.options.get("top_p", 1.0)),
        params.options.get("max_tokens"),
        text_format,
        given if isinstance(given, dict) else {},
        tools,
        body.get("tool_choice") or "auto",
        body.get("parallel_tool_calls") is not False,
    )


def _chat_options(body: Mapping[str, Any], text_format: dict[str, Any]) -> dict[str, Any]:
    chat: dict[str, Any] = {}
    for ours, theirs in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
    ):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    if text_format["type"] != "text":
        chat["response_format"] = _response_format(text_format)
    return chat


# Tools


def _chat_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """`tools` and `tool_choice` the chat way; the chat parser checks names and schemas."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise invalid_request("'tools' must be an array", "tools")
    chat_tools = [_chat_tool(tool, f"tools[{index}]") for index, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        chat_tools, choice = _allowed(chat_tools, choice)
    options: dict[str, Any] = {"tools": chat_tools} if chat_tools else {}
    if choice is not None:
        options["tool_choice"] = _chat_tool_choice(choice)
    return options


def _chat_tool(tool: Any, param: str) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise invalid_request(f"{param}: only function tools are served here, not '{kind}'", param)
    assert isinstance(tool, dict)
    function = {key: tool[key] for key in ("name", "description", "parameters") if key in tool}
    return {"type": "function", "function": function}


def _echoed_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A FunctionTool as a Response lists it (`strict` as given: nothing here enforces it)."""
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def _allowed(tools: list[dict[str, Any]], choice: Mapping[str, Any]) -> tuple[list[Any], Any]:
    """`allowed_tools`: keep the listed functions, then choose among them as `mode` says."""
    listed = choice.get("tools")
    if not isinstance(listed, list):
        raise invalid_request("tool_choice.tools must be an array", "tool_choice.tools")
    names = {item.get("name") for item in listed if isinstance(item, dict)}
    return [tool for tool in tools if tool["function"].get("name") in names], choice.get("mode")


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in _CHOICE_MODES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise invalid_request(
        "'tool_choice' must be auto, none, required, a function "
        '({"type": "function", "name": ...}) or allowed_tools',
        "tool_choice",
    )


# Input items


def _turns(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str) and value:
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid_request("'input' must be a non-empty string or array of items", "input")
    turns: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        _add_turn(turns, item, f"input[{index}]")
    return turns


def _add_turn(turns: list[dict[str, Any]], item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise invalid_request(f"{param} must be an object", param)
    kind = item.get("type", "message")
    if kind == "message":
        turns.append(_message(item, param))
    elif kind == "function_call":
        _add_call(turns, item, param)
    elif kind == "function_call_output":
        call_id = _string(item, "call_id", param)
        output = _text(item.get("output"), f"{param}.output")
        turns.append({"role": "tool", "tool_call_id": call_id, "content": output})
    else:
        raise invalid_request(
            f"{param}: items of type '{kind}' are not supported here "
            "(message, function_call and function_call_output are)",
            param,
        )


def _message(item: Mapping[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise invalid_request(f"{param}.role must be one of {sorted(_ROLES)}", f"{param}.role")
    return {
        "role": "system" if role == "developer" else role,
        "content": _text(item.get("content"), f"{param}.content"),
    }


def _add_call(turns: list[dict[str, Any]], item: Mapping[str, Any], param: str) -> None:
    """A function call the model made: one of the assistant turn's tool calls."""
    call = {
        "id": _string(item, "call_id", param),
        "type": "function",
        "function": {
            "name": _string(item, "name", param),
            "arguments": _string(item, "arguments", param),
        },
    }
    last = turns[-1] if turns else None
    if last is not None and last["role"] == "assistant":  # its text, then its calls
        last.setdefault("tool_calls", []).append(call)
    else:
        turns.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _string(item: Mapping[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise invalid_request(f"{param}.{key} must be a string", f"{param}.{key}")
    return value


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_request(f"{param} must be a string or an array of parts", param)
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
            raise invalid_request(f"{param}: only text parts are supported", param)
        if not isinstance(part.get("text"), str):
            raise invalid_request(f"{param}: a text part needs 'text'", param)
        texts.append(part["text"])
    return "".join(texts)


# Text format


def _text_format(text: Any) -> dict[str, Any]:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid_request(
            "'text.format.type' must be text, json_object or json_schema", "text.format"
        )
    return dict(fmt)


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
    return {"type": "json_schema", "json_schema": schema}
