"""Every exception a request can end with, as the ApiError its client sees: the one place where
the worker's foreign errors (the engine's, aiohttp's, anything unexpected) get an OpenAI status,
type and code, before the first byte (a JSON body) or after it (a stream's last event)."""

from __future__ import annotations

import traceback

from aiohttp import web

from workers.engines.base import ContextLengthExceeded, EmbeddingsDisabled
from workers.errors import ApiError, invalid_request
from workers.logs import log

__all__ = ["as_api_error"]

# The input a context-length error names, by endpoint: OpenAI names the input ("messages") as
# the param, even when max_tokens tipped it over.
_CONTEXT_PARAM = {
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
    "/v1/embeddings": "input",
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
_NOT_FOR_EMBEDDINGS = (
    "This model was not loaded for embeddings: set `embedding: true` in its "
    "llama options (or use a model entry that has it)"
)


def as_api_error(exc: Exception, path: str, *, streaming: bool = False) -> ApiError:
    """What `exc`, raised while serving `path`, tells the client. `streaming`: the answer's
    200 went out already (a generation that failed midway)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextLengthExceeded):
        param = _CONTEXT_PARAM.get(path)
        return invalid_request(exc.message(param or "input"), param, "context_length_exceeded")
    if isinstance(exc, EmbeddingsDisabled):
        return invalid_request(_NOT_FOR_EMBEDDINGS, "model")
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        message = f"{exc.reason}: {exc.text}" if exc.status == 413 else exc.reason
        return ApiError(
            exc.status, message, type="invalid_request_error", code=_HTTP_CODES.get(exc.status)
        )
    if streaming:
        return ApiError(500, f"Generation failed: {exc}", type="server_error")
    log(f"unexpected error on {path}: {exc!r}\n{traceback.format_exc()}")
    return ApiError(500, f"Internal error: {exc}", type="server_error")
