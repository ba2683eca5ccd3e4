"""The tokens an answer used, from a server that is not our worker (a remote upstream, llama.cpp's
llama-server): OpenAI's own `usage` object, where our worker reports it in a header or an SSE
comment (workers/wire.py).

A non-streamed answer carries `usage` in its body. A stream carries it only when asked
(`stream_options.include_usage`): a stream request to such a server asks for it when its client
did not, and the relay then takes that usage out again, so the client gets the stream it asked
for and a key's `tpm` the real count. OpenAI (and llama-server's chat) send it in a last chunk of
its own (`"choices":[]`), taken out whole; llama-server's completions put it on the last chunk
with a choice, which then goes on without it. A Responses stream always says its usage, in its
`response.completed` event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workers.wire import Usage

__all__ = ["USAGE_MARK", "ask_for_usage", "take_usage_chunk", "usage_in_body"]

# A usage object in a stream's event (OpenAI and llama-server write JSON without spaces; a
# `"usage":null` of OpenAI's other chunks is not one). Inside a JSON string a quote is escaped,
# so text a model wrote never matches.
USAGE_MARK = b'"usage":{'
_EVENT_END = b"\n\n"
_DATA = b"data:"


class _Counts(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None  # the Responses API's names
    output_tokens: int | None = None

    def usage(self) -> Usage | None:
        prompt = self.prompt_tokens if self.prompt_tokens is not None else self.input_tokens
        answer = (
            self.completion_tokens if self.completion_tokens is not None else (self.output_tokens)
        )
        if prompt is None and answer is None:
            return None
        return Usage(prompt or 0, answer or 0)


class _Response(msgspec.Struct):
    usage: _Counts | None = None


class _Answer(msgspec.Struct):
    usage: _Counts | None = None
    response: _Response | None = None  # a Responses stream's `response.completed` event


_answer = msgspec.json.Decoder(_Answer)


def usage_in_body(body: bytes) -> Usage | None:
    """The usage of a JSON answer (chat, completion, embeddings, Response) or of a stream's
    event; None without one."""
    try:
        answer = _answer.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    counts = answer.usage or (answer.response.usage if answer.response else None)
    return None if counts is None else counts.usage()


def ask_for_usage(body: bytes) -> bytes | None:
    """A stream request `body` that asks for the usage chunk, or None when it asks already
    (its client will read that chunk itself)."""
    fields: dict[str, Any] = msgspec.json.decode(body)
    options = fields.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    fields["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return msgspec.json.encode(fields)


def take_usage_chunk(events: bytes, strip: bool) -> tuple[bytes, Usage | None]:
    """The usage in the event among `events` (whole SSE events) that holds USAGE_MARK, and the
    events without it if `strip` (the gateway asked for it, not the client): the event taken
    out, or, where it has choices too, relayed without its usage."""
    start = events.find(USAGE_MARK)
    before = events.rfind(_EVENT_END, 0, start)
    begin = 0 if before < 0 else before + len(_EVENT_END)
    after = events.find(_EVENT_END, start)
    end = len(events) if after < 0 else after + len(_EVENT_END)
    data = _data_line(events, begin, start)
    usage = None if data < 0 else usage_in_body(events[data + len(_DATA) : end].strip())
    if not strip or usage is None:
        return events, usage
    return events[:begin] + _without_usage(events[data + len(_DATA) : end]) + events[end:], usage


def _data_line(events: bytes, begin: int, before: int) -> int:
    """Where the `data:` line of the event at `begin` starts (after an `event:` line, if it
    has one), if it starts before `before`; else -1."""
    if events.startswith(_DATA, begin):
        return begin
    found = events.find(b"\n" + _DATA, begin, before)
    return found + 1 if found >= 0 else -1


def _without_usage(payload: bytes) -> bytes:
    """A chunk's event without its usage: none at all for a usage chunk (no choices)."""
    fields: dict[str, Any] = msgspec.json.decode(payload)
    if not fields.get("choices"):
        return b""
    del fields["usage"]
    return _DATA + b" " + msgspec.json.encode(fields) + _EVENT_END
