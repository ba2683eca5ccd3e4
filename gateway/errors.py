"""The gateway's exceptions, each one an OpenAI-shaped error response.

    GatewayError                 (500 server_error)
    ├── InvalidRequest           (400 invalid_request_error)
    │   ├── BodyTooLarge         (413)
    │   └── RequestTimeout       (408 request_timeout, Connection: close)
    ├── Unauthorized             (401 invalid_api_key)
    ├── Forbidden                (403 permission_error)
    ├── ModelNotFound            (404 model_not_found)
    ├── QueueFull                (429 rate_limit_exceeded, Retry-After)
    ├── RateLimited              (429 rate_limit_exceeded, Retry-After, x-ratelimit-*)
    ├── Unavailable              (503 service_unavailable)
    │   └── QueueTimeout         (503 queue_timeout)
    ├── UpstreamFailed           (502 upstream_error)
    │   └── UpstreamTooLarge     (502 upstream_too_large)
    └── UpstreamTimeout          (504 upstream_timeout)

Every body and stream event is made by workers/wire.py's envelope, the worker's too (one
vocabulary for both processes). Foreign exceptions (aiohttp's, msgspec's, Litestar's) are
translated once, where they are caught, with ``raise X from exc``; Litestar's HTTP errors by
`from_http` below.
"""

from __future__ import annotations

from workers.wire import error_body, error_event

__all__ = [
    "BodyTooLarge",
    "Forbidden",
    "GatewayError",
    "HeadersTooLarge",
    "HttpError",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "QueueFull",
    "QueueTimeout",
    "RateLimited",
    "RequestTimeout",
    "TooManyConnections",
    "Unauthorized",
    "Unavailable",
    "UpstreamFailed",
    "UpstreamTimeout",
    "UpstreamTooLarge",
    "UrlTooLong",
    "clipped",
]

_CLIPPED = 64  # characters of a client's own text (a model name, a key name) an answer repeats


def clipped(text: str) -> str:
    """`text` from a client, as an error message repeats it: at most _CLIPPED characters (a
    1 MiB model name is not echoed back, nor written to the log whole)."""
    return text if len(text) <= _CLIPPED else text[: _CLIPPED - 3] + "..."


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"
    rejection: str | None = None  # the metrics' reason, where it is not the code's (metrics.py)

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.extra_headers = headers
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return headers if self.extra_headers is None else {**headers, **self.extra_headers}

    def body(self) -> bytes:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)

    def event(self) -> bytes:
        """As a stream's last event (its 200 went out already)."""
        return error_event(self.message, type=self.type, code=self.code, param=self.param)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class RequestTimeout(InvalidRequest):
    """The client stopped sending its request; what it would send next is unknown, so the
    connection closes after the answer."""

    status = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class UrlTooLong(InvalidRequest):
    status = 414
    code = "url_too_long"


class HeadersTooLarge(InvalidRequest):
    status = 431
    code = "headers_too_large"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, available: list[str]):
        names = ", ".join(available) or "none"
        super().__init__(
            f"The model '{clipped(model)}' does not exist. Available models: {names}.",
            param="model",
        )


class NotFound(GatewayError):
    """Something an admin route names does not exist (a key, a replica)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class QueueFull(GatewayError):
    """Raise with retry_after: the queue is full now, not for good."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class RateLimited(QueueFull):
    """A key over its rpm, tpm or max_concurrent; its x-ratelimit-* headers go with it."""

    rejection = "rate_limit"


class Unavailable(GatewayError):
    """Raise with retry_after: how long until trying again makes sense."""

    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class TooManyConnections(Unavailable):
    code = "too_many_connections"


class QueueTimeout(Unavailable):
    code = "queue_timeout"


class UpstreamFailed(GatewayError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamTooLarge(UpstreamFailed):
    """A worker's answer (a whole body, or one event of a stream) over
    server.max_upstream_bytes: a misbehaving server must not fill the gateway's memory."""

    code = "upstream_too_large"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"


_HTTP_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "rate_limit_error"}


class HttpError(GatewayError):
    """A web framework's own HTTP error (a 404 for an unknown route, a 405), in our words."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message, code="not_found" if status == 404 else None, headers=headers)
        self.status = status
        self.type = _HTTP_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        if status != 404:
            self.code = None
