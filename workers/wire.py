"""What crosses between the gateway and its workers, and between an engine and the API shaping:
the one leaf module both processes import (nothing here imports the rest of either).

- the token counts of an answer (`Usage`), and how a worker reports them out of band: a header
  on a whole answer, an SSE comment before a stream's `[DONE]` (the gateway counts tokens for
  every request; a stream's client sees a usage chunk only if it asked);
- the raw shapes an engine produces (`RawChunk`, `StreamItem`, `EmbeddingResult`);
- the environment variable that carries a worker's secret, and the most choices a request may ask;
- the error vocabulary: OpenAI's error envelope, as a JSON body or a stream's last event. Every
  error either process sends is made here, keyword-only, so no call site builds one by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_CHOICES",
    "SECRET_ENV",
    "USAGE_COMMENT",
    "USAGE_HEADER",
    "EmbeddingResult",
    "RawChunk",
    "StreamItem",
    "Usage",
    "error_body",
    "error_event",
    "error_object",
    "parse_usage",
    "usage_comment",
    "usage_header",
]

# The gateway hands each worker a random secret here at spawn (environment, not argv: argv is
# world-readable in ps); a worker started with one serves only requests that carry it.
SECRET_ENV = "LLM_GATEWAY_WORKER_SECRET"
MAX_CHOICES = 8  # `n`: the most answers one request may ask for

RawChunk = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


# A stream yields raw chunks and, last, the Usage of the whole generation.
StreamItem = RawChunk | Usage


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


USAGE_HEADER = "X-Usage-Tokens"  # "<prompt tokens> <completion tokens>"
USAGE_COMMENT = b": usage "  # an SSE comment event: b": usage <prompt> <completion>\n\n"


def usage_header(usage: Usage) -> str:
    return f"{usage.prompt_tokens} {usage.completion_tokens}"


def usage_comment(usage: Usage) -> bytes:
    return USAGE_COMMENT + usage_header(usage).encode() + b"\n\n"


def parse_usage(text: bytes | str) -> Usage | None:
    """The Usage in a header value or a comment's remainder; None if it is not two counts."""
    fields = text.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        return None
    return Usage(int(fields[0]), int(fields[1]))


def error_object(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope (all four keys: its schema requires them)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_body(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> bytes:
    """The envelope as a JSON body."""
    envelope = error_object(message, type=type, code=code, param=param)
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def error_event(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> bytes:
    """The envelope as a stream's last SSE event (no `[DONE]` follows an error)."""
    return b"data: " + error_body(message, type=type, code=code, param=param) + b"\n\n"
