"""Pure functions turning llama-cpp-python's raw output into OpenAI-schema-valid bodies.

Raw output misses fields the official schemas require (`refusal`, a usage chunk for
`include_usage`) and names the model by its file path; the worker always answers with its
configured model name and its own ids, so the gateway can relay bytes untouched.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from typing import Any

from workers.engine import EmbeddingResult, RawChunk, Usage

__all__ = [
    "SSE_DONE",
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


def _chat_message(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    content = raw.get("content")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content if isinstance(content, str) else None,
        "refusal": None,
    }
    for key in ("tool_calls", "function_call"):
        if raw.get(key):
            message[key] = raw[key]
    return message


def shape_chat(raw: RawChunk, *, model: str, id_: str, usage: Usage | None = None) -> RawChunk:
    choices = [
        {
            "index": i,
            "message": _chat_message(c.get("message")),
            "logprobs": None,
            "finish_reason": _finish(c.get("finish_reason"), _CHAT_FINISH),
        }
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


def _delta(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    delta: dict[str, Any] = {}
    if isinstance(raw.get("role"), str):
        delta["role"] = raw["role"]
    if "content" in raw and (raw["content"] is None or isinstance(raw["content"], str)):
        delta["content"] = raw["content"]
    for key in ("tool_calls", "function_call"):
        if raw.get(key):
            delta[key] = raw[key]
    return delta


def shape_chat_chunk(
    raw: RawChunk, *, model: str, id_: str, created: int, include_usage: bool
) -> RawChunk:
    choices = [
        {
            "index": c.get("index", 0),
            "delta": _delta(c.get("delta")),
            "logprobs": None,
            "finish_reason": c.get("finish_reason"),
        }
        for c in raw.get("choices") or []
    ]
    chunk: RawChunk = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if include_usage:
        # OpenAI sends usage: null on every chunk but the last when usage is requested.
        chunk["usage"] = None
    return chunk


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
        "logprobs": None,
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
