"""The Litestar app: config -> supervisor -> registry -> scheduler -> proxy -> routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from .config import GatewayConfig
from .errors import GatewayError, error_body
from .proxy import ClientGone, Proxy
from .registry import Registry
from .routes import ROUTES, Gateway
from .scheduler import QueuePolicy, Scheduler
from .supervisor import Supervisor

__all__ = ["build_gateway", "create_app"]

log = logging.getLogger("gateway")

_HTTP_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error",
                     404: "invalid_request_error", 405: "invalid_request_error",
                     413: "invalid_request_error", 429: "rate_limit_error"}  # fmt: skip


def build_gateway(config: GatewayConfig) -> Gateway:
    registry = Registry()
    policies = {m.name: QueuePolicy(m.max_queue, m.queue_timeout) for m in config.models}
    return Gateway(
        config=config,
        registry=registry,
        scheduler=Scheduler(registry, policies),
        proxy=Proxy(),
        supervisor=Supervisor(config, registry),
    )


def create_app(config: GatewayConfig) -> Litestar:
    gateway = build_gateway(config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await gateway.proxy.start()
        await gateway.supervisor.start()
        try:
            yield
        finally:
            await gateway.supervisor.stop()
            await gateway.proxy.close()

    return Litestar(
        route_handlers=ROUTES,
        state=State({"gateway": gateway}),
        lifespan=[lifespan],
        exception_handlers={
            GatewayError: _gateway_error,
            ClientGone: _client_gone,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        request_max_body_size=None,  # the routes enforce server.max_body_bytes themselves
        openapi_config=None,
        logging_config=None,  # the CLI configures logging once, for gateway and uvicorn alike
    )


def _json(body: bytes, status: int, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    return _json(exc.body(), exc.status, exc.headers())


def _client_gone(_: Request[Any, Any, Any], __: ClientGone) -> Response[bytes]:
    return _json(b"", 499)  # nobody reads it: the nginx convention for "client closed request"


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    type_ = _HTTP_ERROR_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    code = "not_found" if status == 404 else None
    return _json(error_body(str(exc.detail), type_, code), status, exc.headers)


def _unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unexpected error", exc_info=exc)
    return _json(
        error_body("The gateway hit an internal error.", "server_error", "internal_error"), 500
    )
