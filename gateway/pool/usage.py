"""The tokens an answer used, from a server that is not our worker (a remote upstream, llama.cpp's
llama-server): OpenAI's own `usage` object, where our worker reports it in a header or an SSE
comment (workers/wire.py).

A non-streamed answer carries `usage` in its body. A stream carries it only when asked
(`stream_options.include_usage`): a stream request to such a server asks for it when its client
did not, and the relay then takes that last chunk (`"choices":[]`, the usage alone) out again,
so the client gets the stream it asked for and a key's `tpm` the real count.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workers.wire import Usage

__all__ = ["USAGE_CHUNK", "ask_for_usage", "take_usage_chunk", "usage_in_body"]

# The usage chunk of a stream that asked for it: no choices, only the usage (OpenAI's format;
# llama-server writes JSON without spaces, as OpenAI does).
USAGE_CHUNK = b'"choices":[]'
_EVENT_END = b"\n\n"


class _Counts(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None  # the Responses API's names
    output_tokens: int | None = None

    def usage(self) -> Usage | None:
        prompt = self.prompt_tokens if self.prompt_tokens is not None else self.input_tokens
        answer = self.completion_tokens if self.completion_tokens is not None else (
            self.output_tokens)  # fmt: skip
        if prompt is None and answer is None:
            return None
        return Usage(prompt or 0, answer or 0)


class _Answer(msgspec.Struct):
    usage: _Counts | None = None


_answer = msgspec.json.Decoder(_Answer)


def usage_in_body(body: bytes) -> Usage | None:
    """The usage of a JSON answer (chat, completion, embeddings, Response); None without one."""
    try:
        counts = _answer.decode(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return None if counts is None else counts.usage()


def ask_for_usage(body: bytes) -> bytes | None:
    """A stream request `body` that asks for the usage chunk, or None when it asks already
    (its client will read that chunk itself)."""
    fields: dict[str, Any] = msgspec.json.decode(body)
    options = fields.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    fields["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                "include_usage": True}  # fmt: skip
    return msgspec.json.encode(fields)


def take_usage_chunk(events: bytes, strip: bool) -> tuple[bytes, Usage | None]:
    """The usage of the usage chunk among `events` (whole SSE events holding USAGE_CHUNK), and
    the events without that chunk if `strip` (the gateway asked for it, not the client)."""
    start = events.find(USAGE_CHUNK)
    before = events.rfind(_EVENT_END, 0, start)
    begin = 0 if before < 0 else before + len(_EVENT_END)
    after = events.find(_EVENT_END, start)
    end = len(events) if after < 0 else after + len(_EVENT_END)
    line = events[begin:end].strip()
    usage = usage_in_body(line[len(b"data:") :]) if line.startswith(b"data:") else None
    return (events[:begin] + events[end:] if strip and usage is not None else events), usage
