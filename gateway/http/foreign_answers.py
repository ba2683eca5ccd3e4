"""llama-server's whole answers made OpenAI's: its errors in OpenAI's words, its chat answers
with every field OpenAI's schema requires.

llama-server wraps its errors in OpenAI's envelope with words of its own: `code` is the HTTP
status (a number, where OpenAI's is a string or null), `type` one of its own (a prompt over the
context is `exceed_context_size_error`). Clients tell errors apart by OpenAI's `type` and `code`
(`context_length_exceeded`, as our worker says it), so such a body is rewritten. Its chat
answers leave out the fields that would be null (a choice's `logprobs`, a message's `refusal`),
which typed clients and OpenAI's schema require. OpenAI's own answers pass as they are.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workers.wire import error_body

__all__ = ["completed_chat", "in_openai_words"]

_CHAT = b'"object":"chat.completion"'  # llama-server writes JSON without spaces
_REFUSAL = b'"refusal"'
# llama-server's type -> OpenAI's type and code.
_WORDS = {
    "exceed_context_size_error": ("invalid_request_error", "context_length_exceeded"),
    "invalid_request_error": ("invalid_request_error", None),
    "not_supported_error": ("invalid_request_error", "unsupported"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("permission_error", None),
    "unavailable_error": ("server_error", "service_unavailable"),
    "server_error": ("server_error", None),
}


class _Error(msgspec.Struct):
    code: int
    message: str
    type: str


class _Answer(msgspec.Struct):
    error: _Error


_decoder = msgspec.json.Decoder(_Answer)


def in_openai_words(body: bytes) -> bytes | None:
    """OpenAI's error body for llama-server's error `body`; None when it is not one."""
    try:
        error = _decoder.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    unknown = ("server_error" if error.code >= 500 else "invalid_request_error", None)
    kind, code = _WORDS.get(error.type, unknown)
    return error_body(error.message, type=kind, code=code)


def completed_chat(body: bytes) -> bytes | None:
    """A chat answer `body` with the null fields llama-server leaves out put in; None when it is
    no chat answer, or has them (its `refusal`)."""
    if _CHAT not in body or _REFUSAL in body:
        return None
    try:
        answer = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict):
            _complete(choice)
    return msgspec.json.encode(answer)


def _complete(choice: dict[str, Any]) -> None:
    choice.setdefault("logprobs", None)
    for part in (choice.get("message"), choice["logprobs"]):
        if isinstance(part, dict):
            part.setdefault("refusal", None)
