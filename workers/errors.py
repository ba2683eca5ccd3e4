"""OpenAI-shaped API errors: every failure a client sees has the same body."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "error_body", "invalid_request"]


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The body OpenAI sends for any error (all four keys are required by its schema)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    """An error with an HTTP status, raised anywhere and rendered once by the server."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 caused by what the client sent."""
    return ApiError(400, message, "invalid_request_error", param, code)
