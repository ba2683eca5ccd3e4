"""The edge between the gateway and web browsers: an ASGI wrapper around the whole app that
refuses a browser's request a keyless gateway must not serve (403, gateway/http/origins.py says
which), answers server.cors' preflights and adds CORS headers to every answer for an allowed
origin, the worker's relayed ones included (they bypass Litestar's response classes).

With keys and no server.cors it reads nothing: one attribute look-up per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from ..config.file import GatewayConfig
from ..errors import Forbidden
from .origins import (
    browser_headers,
    cors_origin,
    is_preflight,
    preflight_headers,
    refusal,
    response_headers,
)

__all__ = ["Browsers"]

log = logging.getLogger("gateway.browsers")
_WARN_EVERY = 10.0  # seconds between two warnings of refused requests: a probe is one line
_JSON = (b"content-type", b"application/json")


class Browsers:
    """Wraps the app; `config` is the running config (a reload swaps it)."""

    def __init__(self, app: ASGIApp, config: Callable[[], GatewayConfig]) -> None:
        self.app = app
        self.config = config
        self._warned_at = -_WARN_EVERY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config()
        keyless, server = not config.auth.keys, config.server
        if scope["type"] != ScopeType.HTTP or not (keyless or server.cors):
            await self.app(scope, receive, send)
            return
        seen, method = browser_headers(scope["headers"]), scope["method"]
        why = refusal(seen, method, server) if keyless else None
        if why is not None:
            self._warn(why[0], seen.get(b"host"), seen.get(b"origin"))
            await _refuse(send, Forbidden(why[1], code=why[0]))
            return
        origin = cors_origin(seen, server.cors)
        if origin is None:
            await self.app(scope, receive, send)
        elif is_preflight(method, seen):
            await _answer(send, 204, preflight_headers(origin, seen), b"")
        else:
            await self.app(scope, receive, _adding(send, response_headers(origin)))

    def _warn(self, code: str, host: bytes | None, origin: bytes | None) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "refused a browser's request (%s): Host %r, Origin %r; more are "
                "refused quietly for %g s",
                code,
                (host or b"")[:100],
                (origin or b"")[:100],
                _WARN_EVERY,
            )


def _adding(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *headers]
        await send(message)

    return with_headers


async def _refuse(send: Send, error: Forbidden) -> None:
    await _answer(send, error.status, [_JSON], error.body())


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(end)
