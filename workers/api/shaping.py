"""Pure functions turning llama-cpp-python's raw output into OpenAI-schema-valid bodies.

Raw output misses fields the official schemas require (`refusal`, a usage chunk for
`include_usage`) and names the model by its file path; the worker always answers with its
configured model name and its own ids, so the gateway can relay bytes untouched. Logprobs
and tool calls have their own modules (`workers.api.logprobs`, `workers.api.tools`).
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from typing import Any

from workers.api.logprobs import chat_logprobs, completion_logprobs
from workers.api.tools import ToolCallDeltas, message_tool_fields
from workers.wire import EmbeddingResult, RawChunk, Usage

__all__ = [
    "SSE_DONE",
    "ChatStreamShaper",
    "new_id",
    "shape_chat",
    "shape_chat_chunk",
    "shape_completion",
    "shape_completion_chunk",
    "shape_embeddings",
    "sse_event",
    "usage_body",
    "usage_chunk",
]

SSE_DONE = b"data: [DONE]\n\n"

_CHAT_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_COMPLETION_FINISH = frozenset({"stop", "length", "content_filter"})


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def sse_event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _raw_usage(raw: RawChunk, fallback: Usage | None) -> Usage:
    usage = raw.get("usage")
    if isinstance(usage, dict):
        return Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
    return fallback or Usage(0, 0)


def _finish(reason: Any, allowed: frozenset[str]) -> str:
    # A finished non-streaming choice must carry a reason from the enum; llama's are.
    return reason if reason in allowed else "stop"


def _tool_finish(legacy: bool) -> str:
    return "function_call" if legacy else "tool_calls"


def _chat_choice(raw: Any, index: int, top_logprobs: int | None, legacy: bool) -> RawChunk:
    raw = raw if isinstance(raw, dict) else {}
    message = raw.get("message") if isinstance(raw.get("message"), dict) else {}
    content = message.get("content")
    calls = message_tool_fields(message, legacy)
    return {
        "index": index,
        "message": {
            "role": "assistant",
            # A message that calls tools has null content, as OpenAI sends it.
            "content": content if isinstance(content, str) and not calls else None,
            "refusal": None,
            **calls,
        },
        "logprobs": chat_logprobs(raw.get("logprobs"), top_logprobs),
        "finish_reason": (
            _tool_finish(legacy) if calls else _finish(raw.get("finish_reason"), _CHAT_FINISH)
        ),
    }


def shape_chat(
    raw: RawChunk,
    *,
    model: str,
    id_: str,
    usage: Usage | None = None,
    top_logprobs: int | None = None,
    legacy_functions: bool = False,
) -> RawChunk:
    choices = [
        _chat_choice(c, i, top_logprobs, legacy_functions)
        for i, c in enumerate(raw.get("choices") or [])
    ]
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(raw.get("created") or 0),
        "model": model,
        "choices": choices,
        "usage": usage_body(_raw_usage(raw, usage)),
    }


class ChatStreamShaper:
    """Shapes one stream's chunks in order (tool-call deltas need what came before)."""

    def __init__(
        self,
        *,
        model: str,
        id_: str,
        created: int,
        include_usage: bool,
        top_logprobs: int | None = None,
        legacy_functions: bool = False,
    ) -> None:
        self.model, self.id, self.created = model, id_, created
        self.include_usage = include_usage
        self.top_logprobs = top_logprobs
        self._tools = ToolCallDeltas(legacy_functions)

    def chunk(self, raw: RawChunk) -> RawChunk:
        chunk: RawChunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [self._choice(c) for c in raw.get("choices") or []],
        }
        if self.include_usage:
            # OpenAI sends usage: null on every chunk but the last when usage is requested.
            chunk["usage"] = None
        return chunk

    def _choice(self, raw: Any) -> RawChunk:
        raw = raw if isinstance(raw, dict) else {}
        reason = raw.get("finish_reason")
        if reason == "tool_calls" and self._tools.legacy:
            reason = "function_call"
        return {
            "index": raw.get("index", 0),
            "delta": self._delta(raw.get("delta")),
            "logprobs": chat_logprobs(raw.get("logprobs"), self.top_logprobs),
            "finish_reason": reason,
        }

    def _delta(self, raw: Any) -> dict[str, Any]:
        raw = raw if isinstance(raw, dict) else {}
        delta: dict[str, Any] = {}
        if isinstance(raw.get("role"), str):
            delta["role"] = raw["role"]
        content = raw.get("content")
        # Null content goes with the role only (OpenAI's first tool-call delta); llama repeats
        # it on every tool-call delta.
        if isinstance(content, str) or ("content" in raw and content is None and delta):
            delta["content"] = content
        delta.update(self._tools.fields(raw))
        return delta


def shape_chat_chunk(
    raw: RawChunk, *, model: str, id_: str, created: int, include_usage: bool
) -> RawChunk:
    """One chunk shaped on its own (no logprobs, no earlier tool-call deltas)."""
    shaper = ChatStreamShaper(model=model, id_=id_, created=created, include_usage=include_usage)
    return shaper.chunk(raw)


def usage_chunk(usage: Usage, *, object_: str, model: str, id_: str, created: int) -> RawChunk:
    """The final `include_usage` chunk: no choices, usage for the whole request."""
    return {
        "id": id_,
        "object": object_,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_body(usage),
    }


def _completion_choice(raw: Any, index: int, finished: bool) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    reason = raw.get("finish_reason")
    text = raw.get("text")
    return {
        "index": index,
        "text": text if isinstance(text, str) else "",
        "logprobs": completion_logprobs(raw.get("logprobs")),
        # Streamed chunks before the last carry null, exactly as OpenAI sends them (the
        # official schema marks it non-null; see the worker report).
        "finish_reason": _finish(reason, _COMPLETION_FINISH) if finished or reason else None,
    }


def shape_completion(raws: list[RawChunk], *, model: str, id_: str) -> RawChunk:
    """One response for one or many prompts: choices renumbered, usage summed."""
    choices: list[dict[str, Any]] = []
    usage = Usage(0, 0)
    for raw in raws:
        for c in raw.get("choices") or []:
            choices.append(_completion_choice(c, len(choices), finished=True))
        usage = usage + _raw_usage(raw, None)
    return {
        "id": id_,
        "object": "text_completion",
        "created": int(raws[0].get("created") or 0) if raws else 0,
        "model": model,
        "choices": choices,
        "usage": usage_body(usage),
    }


def shape_completion_chunk(raw: RawChunk, *, model: str, id_: str, created: int) -> RawChunk:
    """A streamed completion chunk; its choice index is the prompt's (see _chain_prompts)."""
    return {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            _completion_choice(c, int(c.get("index", 0)), finished=False)
            for c in raw.get("choices") or []
        ],
    }


def _base64_floats(vector: list[float]) -> str:
    # OpenAI's base64 format: little-endian float32, concatenated.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def shape_embeddings(result: EmbeddingResult, *, model: str, encoding_format: str) -> RawChunk:
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _base64_floats(v) if encoding_format == "base64" else v,
        }
        for i, v in enumerate(result.vectors)
    ]
    tokens = result.prompt_tokens
    return {
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
