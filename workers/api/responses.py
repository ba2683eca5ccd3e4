"""A chat answer, or its stream, as OpenAI's Responses API sends it (`POST /v1/responses`).

The request side is workers.api.responses_request. This is done in the worker, which shapes every
answer already: the gateway relays the bytes as for any other endpoint, so queueing, limits,
metrics and cancellation apply unchanged. A chat answer's text becomes a `message` output item
and each of its tool calls a `function_call` item; a stream announces each item when its first
piece arrives and closes them all, in order, when the generation ends.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.api.responses_request import ResponseMeta
from workers.wire import RawChunk, Usage

__all__ = ["Answer", "ResponseStream", "answer_output", "chat_answer", "response_body", "sse"]


@dataclass
class Answer:
    """What a chat generation produced: text, tool calls (each its output item), finish."""

    text: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)  # function_call output items
    finish: str | None = None


def chat_answer(raw: RawChunk) -> Answer:
    """The Answer of a whole chat completion."""
    choice = (raw.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = [
        _call_item(call.get("id"), call["function"]) for call in message.get("tool_calls") or []
    ]
    return Answer(message.get("content") or "", calls, choice.get("finish_reason"))


def _call_item(call_id: Any, function: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex}",
        "call_id": call_id or f"call_{uuid.uuid4().hex[:24]}",
        "name": function.get("name"),
        "arguments": function.get("arguments") or "",
        "status": "completed",
    }


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(meta: ResponseMeta, text: str | None, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": meta.message_id,
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [_part(text)],
    }


def _item_status(finish: str | None) -> str:
    return "incomplete" if finish == "length" else "completed"


def answer_output(meta: ResponseMeta, answer: Answer) -> list[dict[str, Any]]:
    """The output items of a whole answer: its message (unless it only calls tools), its calls."""
    status = _item_status(answer.finish)
    message = [_message(meta, answer.text, status)] if answer.text or not answer.calls else []
    return message + [{**call, "status": status} for call in answer.calls]


def response_body(
    meta: ResponseMeta, output: list[dict[str, Any]] | None, usage: Usage | None, finish: str | None
) -> dict[str, Any]:
    """The Response: in progress (`output` None), completed, or cut short by max_output_tokens."""
    done, cut = output is not None, finish == "length"
    status = "in_progress" if not done else "incomplete" if cut else "completed"
    body: dict[str, Any] = {
        "id": meta.id,
        "object": "response",
        "created_at": meta.created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and cut else None,
        "instructions": meta.instructions,
        "max_output_tokens": meta.max_output_tokens,
        "model": meta.model,
        "metadata": meta.metadata,
        "output": output or [],
        "parallel_tool_calls": meta.parallel_tool_calls,
        "temperature": meta.temperature,
        "top_p": meta.top_p,
        "tool_choice": meta.tool_choice,
        "tools": meta.tools,
        "store": False,
        "text": {"format": meta.text_format},
    }
    if usage is not None:  # the spec has no null usage: an unfinished Response has none
        body["usage"] = _usage(usage)
    return body


class ResponseStream:
    """Turns a chat stream's raw chunks into the Responses events, each numbered in turn.

    An output item is announced when its first piece arrives (the message at its first text,
    a function call at its first delta) and all are closed, in order, when the stream ends.
    """

    def __init__(self, meta: ResponseMeta):
        self.meta = meta
        self._sequence = 0
        self._items: list[dict[str, Any]] = []  # output items in the order they opened
        self._text: list[str] = []  # the message's text
        self._at: dict[str, Any] = {}  # where the message is (event fields), once it opened
        self._calls: dict[int, int] = {}  # a chat tool-call index -> its output index
        self._finish: str | None = None

    def opening(self) -> list[dict[str, Any]]:
        pending = response_body(self.meta, None, None, None)
        return [
            self._event("response.created", response=pending),
            self._event("response.in_progress", response=pending),
        ]

    def chunk(self, raw: RawChunk) -> list[dict[str, Any]]:
        choice = (raw.get("choices") or [{}])[0]
        self._finish = choice.get("finish_reason") or self._finish
        delta = choice.get("delta") or {}
        events = self._text_delta(delta["content"]) if delta.get("content") else []
        for call in delta.get("tool_calls") or []:
            events += self._call_delta(call)
        return events

    def closing(self, usage: Usage) -> list[dict[str, Any]]:
        events = [] if self._items else self._open_message()  # an empty answer is a message
        status = _item_status(self._finish)
        for index, item in enumerate(self._items):
            item["status"] = status
            events += self._closed(index, item)
        done = response_body(self.meta, self._items, usage, self._finish)
        return [*events, self._event(f"response.{done['status']}", response=done)]

    def _text_delta(self, delta: str) -> list[dict[str, Any]]:
        events = [] if self._at else self._open_message()
        self._text.append(delta)
        event = self._event("response.output_text.delta", **self._at, delta=delta, logprobs=[])
        return [*events, event]

    def _open_message(self) -> list[dict[str, Any]]:
        self._items.append(_message(self.meta, None, "in_progress"))
        index = len(self._items) - 1
        self._at = {"output_index": index, "content_index": 0, "item_id": self.meta.message_id}
        return [
            self._added(index),
            self._event("response.content_part.added", **self._at, part=_part("")),
        ]

    def _call_delta(self, raw: Mapping[str, Any]) -> list[dict[str, Any]]:
        function, index = raw.get("function") or {}, raw.get("index", 0)
        events = []
        if index not in self._calls:  # llama repeats id and name in every delta: use the first
            item = {
                **_call_item(raw.get("id"), {"name": function.get("name")}),
                "status": "in_progress",
            }
            self._items.append(item)
            self._calls[index] = len(self._items) - 1
            events.append(self._added(self._calls[index]))
        at, piece = self._calls[index], function.get("arguments") or ""
        if piece:
            self._items[at]["arguments"] += piece
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    delta=piece,
                    output_index=at,
                    item_id=self._items[at]["id"],
                )
            )
        return events

    def _closed(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        if item["type"] == "function_call":
            events = [
                self._event(
                    "response.function_call_arguments.done",
                    output_index=index,
                    item_id=item["id"],
                    name=item["name"],
                    arguments=item["arguments"],
                )
            ]
        else:
            text = "".join(self._text)
            item["content"] = [part := _part(text)]
            events = [
                self._event("response.output_text.done", **self._at, text=text, logprobs=[]),
                self._event("response.content_part.done", **self._at, part=part),
            ]
        return [*events, self._event("response.output_item.done", output_index=index, item=item)]

    def _added(self, index: int) -> dict[str, Any]:
        item = dict(self._items[index])  # as it stood when it opened
        return self._event("response.output_item.added", output_index=index, item=item)

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._sequence += 1
        return {"type": kind, "sequence_number": self._sequence - 1, **fields}


def sse(event: Mapping[str, Any]) -> bytes:
    """One Responses event as SSE, named like OpenAI's (`event:` then `data:`)."""
    return (
        b"event: "
        + str(event["type"]).encode()
        + b"\ndata: "
        + json.dumps(event, separators=(",", ":")).encode()
        + b"\n\n"
    )
