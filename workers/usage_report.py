"""How a worker tells its gateway the tokens a request used, whatever the client asked to see.

The gateway counts tokens (metrics, the request log, per-key token limits) for every request,
while a stream's client sees a usage chunk only if it asked (`stream_options.include_usage`). So
a worker reports usage out of band: a header on a whole answer, and an SSE comment just before a
stream's `[DONE]`, which the gateway's relay takes out of the stream.
"""

from __future__ import annotations

from workers.engine import Usage

__all__ = ["USAGE_COMMENT", "USAGE_HEADER", "parse_usage", "usage_comment", "usage_header"]

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
