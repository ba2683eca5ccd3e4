"""HEAD answered as GET without its body (RFC 9110 9.3.2), for every GET route: uptime probes and
load balancers check /health, /ready, /v1/models and /ui with HEAD.

The app sees a GET; uvicorn, whose own scope still says HEAD, sends the status and headers
(Content-Length included) and drops the body.
"""

from __future__ import annotations

from typing import cast

from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["AnswerHead"]


class AnswerHead:
    """Passes HEAD requests to `app` as GET; everything else untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":
            scope = cast(Scope, {**scope, "method": "GET"})  # a copy: uvicorn's own says HEAD
        await self.app(scope, receive, send)
