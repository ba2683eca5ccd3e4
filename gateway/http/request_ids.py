"""Every answer carries an `X-Request-ID`: the client's, when it sent a safe one, or a new one.

An ASGI wrapper around the whole app decides the id once, before any route runs, so the errors
the gateway makes itself (401, 400, 404, 429, 503...) carry it as well as the answers relayed
from a worker; the routes, the request log and the worker read it from the scope.
"""

from __future__ import annotations

import itertools
import os
import re

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_KEY", "RequestIds", "new_request_id", "request_id"]

REQUEST_ID_KEY = "llm_gateway.request_id"  # the scope key of the request's id
# Echoed and logged: short and of a safe alphabet, else replaced by a new one.
_SAFE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_HEADER = b"x-request-id"
# Unique per process start, then a counter (cheaper than a uuid4 per request).
_prefix, _counter = os.urandom(6).hex(), itertools.count()


def new_request_id() -> str:
    return f"{_prefix}{next(_counter):08x}"


def request_id(scope: Scope) -> str:
    """The request's id: set by RequestIds, or decided now (an app called without it)."""
    found = scope.get(REQUEST_ID_KEY)
    return found if isinstance(found, str) else _decide(scope)


def _decide(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == _HEADER:  # ASGI servers give header names in lower case
            return value.decode() if _SAFE.fullmatch(value) else new_request_id()
    return new_request_id()


class RequestIds:
    """Decides each HTTP request's id and adds it to the answer if the app did not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        decided = scope[REQUEST_ID_KEY] = _decide(scope)  # type: ignore[literal-required]
        header = (_HEADER, decided.encode())

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _HEADER for name, _ in headers):
                    message["headers"] = [*headers, header]
            await send(message)

        await self.app(scope, receive, with_id)
