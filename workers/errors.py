"""The worker's API errors: each failure a client sees is an ApiError, rendered once, in the
envelope both processes share (workers/wire.py); workers/failures.py maps every other exception
a request can end with onto one."""

from __future__ import annotations

from typing import Any

from workers.wire import error_event, error_object

__all__ = ["ApiError", "invalid_request"]


class ApiError(Exception):
    """An error with an HTTP status, raised anywhere and rendered once by the server."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_object(self.message, type=self.type, code=self.code, param=self.param)

    def event(self) -> bytes:
        """As a stream's last event."""
        return error_event(self.message, type=self.type, code=self.code, param=self.param)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 caused by what the client sent."""
    return ApiError(400, message, type="invalid_request_error", code=code, param=param)
