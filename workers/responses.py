"""OpenAI's Responses API (`POST /v1/responses`) on the chat path we already have.

A request becomes chat parameters (instructions as the system message, `input` as the turns,
`max_output_tokens`, `temperature`, `top_p`, `text.format` as a response format); the chat
answer, or its stream, becomes a `Response`, or the Responses event sequence. It is done here
in the worker, which shapes every answer already: the gateway relays the bytes as for any other
endpoint, so queueing, limits, metrics and cancellation apply unchanged.

Not served yet (a 400 that says so): function tools and function-call items in `input`, and
`previous_response_id` (responses are not stored: every Response says `store: false`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.engine import RawChunk, Usage
from workers.errors import invalid_request
from workers.params import ChatParams, parse_chat

__all__ = [
    "ResponseMeta",
    "ResponseStream",
    "answer_text",
    "parse_response_request",
    "response_body",
    "sse",
]

_ROLES = {"user", "assistant", "system", "developer"}
_TEXT_PARTS = {"input_text", "output_text", "text"}


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
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    created_at: int = field(default_factory=lambda: int(time.time()))


def parse_response_request(body: Mapping[str, Any], model: str) -> tuple[ChatParams, ResponseMeta]:
    """Chat parameters for a Responses request, and what its Response echoes."""
    _refuse_unserved(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid_request("'instructions' must be a string", "instructions")
    messages = ([{"role": "system", "content": instructions}] if instructions else []) + _turns(
        body.get("input")
    )
    text_format = _text_format(body.get("text"))
    chat: dict[str, Any] = {"messages": messages, "stream": bool(body.get("stream"))}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p")):  # fmt: skip
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    if text_format["type"] != "text":
        chat["response_format"] = _response_format(text_format)
    params = parse_chat(chat)
    given = body.get("metadata")
    metadata: dict[str, Any] = given if isinstance(given, dict) else {}
    meta = ResponseMeta(model, instructions, float(params.options.get("temperature", 1.0)),
                        float(params.options.get("top_p", 1.0)), params.options.get("max_tokens"),
                        text_format, metadata)  # fmt: skip
    return params, meta


def _refuse_unserved(body: Mapping[str, Any]) -> None:
    if body.get("previous_response_id") is not None:
        raise invalid_request("previous_response_id is not supported: responses are not stored "
                              "here; send the whole conversation as 'input'",
                              "previous_response_id")  # fmt: skip
    if body.get("tools"):
        raise invalid_request("tools are not supported on /v1/responses here yet; use "
                              "/v1/chat/completions for tool calls", "tools")  # fmt: skip


def _turns(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str) and value:
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid_request("'input' must be a non-empty string or array of items", "input")
    return [_turn(item, f"input[{index}]") for index, item in enumerate(value)]


def _turn(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid_request(f"{param} must be an object", param)
    kind = item.get("type", "message")
    if kind != "message":
        raise invalid_request(f"{param}: items of type '{kind}' are not supported here yet "
                              "(messages are)", param)  # fmt: skip
    role = item.get("role")
    if role not in _ROLES:
        raise invalid_request(f"{param}.role must be one of {sorted(_ROLES)}", f"{param}.role")
    return {"role": "system" if role == "developer" else role,
            "content": _text(item.get("content"), f"{param}.content")}  # fmt: skip


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


def _text_format(text: Any) -> dict[str, Any]:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid_request("'text.format.type' must be text, json_object or json_schema",
                              "text.format")  # fmt: skip
    return dict(fmt)


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
    return {"type": "json_schema", "json_schema": schema}


def _usage(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}  # fmt: skip


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(meta: ResponseMeta, text: str | None, status: str) -> dict[str, Any]:
    return {"type": "message", "id": meta.message_id, "status": status, "role": "assistant",
            "content": [] if text is None else [_part(text)]}  # fmt: skip


def response_body(meta: ResponseMeta, text: str | None, usage: Usage | None,
                  finish_reason: str | None) -> dict[str, Any]:  # fmt: skip
    """The Response: in progress (`text` None), completed, or cut short by max_output_tokens."""
    done = text is not None
    cut = finish_reason == "length"
    status = "in_progress" if not done else "incomplete" if cut else "completed"
    body: dict[str, Any] = {
        "id": meta.id, "object": "response", "created_at": meta.created_at, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and cut else None,
        "instructions": meta.instructions, "max_output_tokens": meta.max_output_tokens,
        "model": meta.model, "metadata": meta.metadata,
        "output": [_message(meta, text, "incomplete" if cut else "completed")] if done else [],
        "parallel_tool_calls": True, "temperature": meta.temperature, "top_p": meta.top_p,
        "tool_choice": "auto", "tools": [], "store": False, "text": {"format": meta.text_format},
    }  # fmt: skip
    if usage is not None:  # the spec has no null usage: an unfinished Response has none
        body["usage"] = _usage(usage)
    return body


def answer_text(raw: RawChunk) -> tuple[str, str | None]:
    """The text and finish reason of a whole chat completion."""
    choice = (raw.get("choices") or [{}])[0]
    return (choice.get("message") or {}).get("content") or "", choice.get("finish_reason")


class ResponseStream:
    """Turns a chat stream's raw chunks into the Responses events, each numbered in turn."""

    def __init__(self, meta: ResponseMeta):
        self.meta = meta
        self._sequence = 0
        self._text: list[str] = []
        self._finish: str | None = None

    def opening(self) -> list[dict[str, Any]]:
        meta, pending = self.meta, response_body(self.meta, None, None, None)
        return [self._event("response.created", response=pending),
                self._event("response.in_progress", response=pending),
                self._event("response.output_item.added", output_index=0,
                            item=_message(meta, None, "in_progress")),
                self._event("response.content_part.added", output_index=0, content_index=0,
                            item_id=meta.message_id, part=_part(""))]  # fmt: skip

    def chunk(self, raw: RawChunk) -> list[dict[str, Any]]:
        choice = (raw.get("choices") or [{}])[0]
        self._finish = choice.get("finish_reason") or self._finish
        delta = (choice.get("delta") or {}).get("content")
        if not delta:
            return []
        self._text.append(delta)
        return [self._event("response.output_text.delta", output_index=0, content_index=0,
                            item_id=self.meta.message_id, delta=delta, logprobs=[])]  # fmt: skip

    def closing(self, usage: Usage) -> list[dict[str, Any]]:
        meta, text = self.meta, "".join(self._text)
        done = response_body(meta, text, usage, self._finish)
        at = {"output_index": 0, "content_index": 0, "item_id": meta.message_id}
        return [self._event("response.output_text.done", **at, text=text, logprobs=[]),
                self._event("response.content_part.done", **at, part=_part(text)),
                self._event("response.output_item.done", output_index=0,
                            item=done["output"][0]),
                self._event(f"response.{done['status']}", response=done)]  # fmt: skip

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._sequence += 1
        return {"type": kind, "sequence_number": self._sequence - 1, **fields}


def sse(event: Mapping[str, Any]) -> bytes:
    """One Responses event as SSE, named like OpenAI's (`event:` then `data:`)."""
    return (b"event: " + str(event["type"]).encode() + b"\ndata: "
            + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")  # fmt: skip
