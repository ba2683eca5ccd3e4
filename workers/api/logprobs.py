"""Log probabilities: parse OpenAI's logprob fields and shape llama-cpp-python's output.

llama-cpp-python 0.3.36 computes logprobs only for a model loaded with `logits_all=True`
(`create_completion` raises otherwise): it needs the logits of every position, which costs
n_ctx x n_vocab floats of memory and slows prompt processing, so it is a per-model opt-in
(`llama.logits_all: true` in config.yaml) and the engine answers a clear 400 without it.

Shape gaps fixed here: values are numpy float32 (not JSON-serialisable); chat `bytes` is
null where OpenAI gives the token's UTF-8 bytes; chat `top_logprobs` holds the requested
N plus the sampled token when it is not among them (OpenAI: exactly the top N, sorted).
Legacy completions keep llama's "top N plus the sampled token" dicts, which is what OpenAI
documents for that endpoint ("up to logprobs+1 elements").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from workers.errors import invalid_request

__all__ = [
    "MAX_CHAT_TOP_LOGPROBS",
    "MAX_COMPLETION_LOGPROBS",
    "chat_logprobs",
    "completion_logprobs",
    "parse_chat_logprobs",
    "parse_completion_logprobs",
    "token_bytes",
    "wants_logprobs",
]

MAX_CHAT_TOP_LOGPROBS = 20  # OpenAI's limits
MAX_COMPLETION_LOGPROBS = 5
_UNLIKELY = -9999.0  # OpenAI's stand-in for "too unlikely to say"
_BYTES = "bytes:"
_ESCAPED = re.compile(r"(?:\\x[0-9a-f]{2})+")


def _bounded_int(value: Any, param: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise invalid_request(f"'{param}' must be an integer from 0 to {most}", param)
    return value


def parse_chat_logprobs(body: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """(llama options, top_logprobs N) for chat; N is None when logprobs are not wanted."""
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise invalid_request("'logprobs' must be a boolean", "logprobs")
    top = body.get("top_logprobs")
    if top is not None:
        top = _bounded_int(top, "top_logprobs", MAX_CHAT_TOP_LOGPROBS)
        if not logprobs:
            raise invalid_request("'top_logprobs' requires 'logprobs': true", "top_logprobs")
    if not logprobs:
        return {}, None
    top = top or 0
    # llama passes `top_logprobs if logprobs else None`: 0 still means "compute them".
    return {"logprobs": True, "top_logprobs": top}, top


def parse_completion_logprobs(body: Mapping[str, Any]) -> dict[str, Any]:
    logprobs = body.get("logprobs")
    if logprobs is None:
        return {}
    return {"logprobs": _bounded_int(logprobs, "logprobs", MAX_COMPLETION_LOGPROBS)}


def wants_logprobs(options: Mapping[str, Any]) -> bool:
    return options.get("logprobs") not in (None, False)


def _number(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else _UNLIKELY


def token_bytes(token: str) -> list[int]:
    """A token's bytes: its text's, or those its `bytes:\\xNN...` name spells (a token that is
    part of a character, named so by workers.engines.loop.text.token_text as OpenAI names them)."""
    if token.startswith(_BYTES) and _ESCAPED.fullmatch(token, len(_BYTES)):
        return list(bytes.fromhex(token[len(_BYTES) :].replace("\\x", "")))
    return list(token.encode())


def _token(raw: Mapping[str, Any]) -> dict[str, Any]:
    token = str(raw.get("token") or "")
    return {"token": token, "logprob": _number(raw.get("logprob")), "bytes": token_bytes(token)}


def _chat_token(raw: Any, top_n: int) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    tops = [_token(t) for t in raw.get("top_logprobs") or [] if isinstance(t, dict)]
    tops.sort(key=lambda t: t["logprob"], reverse=True)
    return {**_token(raw), "top_logprobs": tops[:top_n]}


def chat_logprobs(raw: Any, top_n: int | None) -> dict[str, Any] | None:
    """A choice's `logprobs` for chat: null unless requested and produced."""
    content = raw.get("content") if isinstance(raw, dict) else None
    if top_n is None or not isinstance(content, list):
        return None
    return {"content": [_chat_token(t, top_n) for t in content], "refusal": None}


def completion_logprobs(raw: Any) -> dict[str, Any] | None:
    """A completion choice's `logprobs`: llama's lists with plain floats.

    With `echo`, the first prompt token has no logprob: null there, as OpenAI sends it."""
    if not isinstance(raw, dict):
        return None
    top = raw.get("top_logprobs") or []
    return {
        "tokens": [str(t) for t in raw.get("tokens") or []],
        "text_offset": [int(o) for o in raw.get("text_offset") or []],
        "token_logprobs": [
            None if p is None else _number(p) for p in raw.get("token_logprobs") or []
        ],
        "top_logprobs": [
            None if t is None else {str(k): _number(v) for k, v in t.items()} for t in top
        ],
    }
