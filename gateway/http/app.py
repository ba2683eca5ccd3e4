"""The Litestar app: config -> supervisor -> registry -> scheduler -> proxy -> routes."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from ..config.file import GatewayConfig
from ..errors import GatewayError, HttpError, clipped
from ..observe.gateways import Gateways
from ..observe.marks import marks
from ..observe.metrics import Metrics
from ..observe.recent import Recent
from ..pool.affinity_sync import AffinitySync
from ..reloader import Reloader
from ..state import Gateway, build_gateway
from .relay import ClientGone
from .routes import ROUTES

__all__ = ["create_app"]

log = logging.getLogger("gateway")


def create_app(config: GatewayConfig, source: Path | None = None, port: int = 0) -> Litestar:
    """The app serving `config` on `port`; `source` is the file a reload reads again."""
    gateway = build_gateway(config, source)
    reloader = Reloader(gateway)
    metrics = Metrics(gateway) if config.server.metrics else None
    recent = Recent()
    gateways = Gateways(config.redis.url, port, lambda: _facts(gateway))
    sync = (
        None
        if config.redis.url is None
        else AffinitySync(config.redis.url, gateway.scheduler.table)
    )
    if sync is not None:
        gateway.scheduler.share = sync.shared

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await gateway.proxy.start()
        await gateway.supervisor.start()
        gateway.scaler.start()
        await gateways.start()
        if sync is not None:
            sync.start()
        watcher = asyncio.create_task(reloader.watch())
        sampler = asyncio.create_task(_sample_queues(recent, gateway))
        # What start-up allocated lives as long as the process: keep the collector off it,
        # so its full passes (pauses on the relay path) walk only per-request garbage.
        gc.freeze()
        try:
            yield
        finally:
            watcher.cancel()
            sampler.cancel()
            await gateways.close()
            if sync is not None:
                await sync.close()
            await gateway.scaler.stop()
            await gateway.supervisor.stop()
            await gateway.proxy.close()
            await gateway.limits.close()

    return Litestar(
        route_handlers=ROUTES,
        state=State(
            {
                "gateway": gateway,
                "reloader": reloader,
                "metrics": metrics,
                "gateways": gateways,
                "recent": recent,
            }
        ),
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


async def _sample_queues(recent: Recent, gateway: Gateway) -> None:
    """The queue depth once a second, for /admin/stats."""
    while True:
        recent.sample(gateway.scheduler.queued_total())
        await asyncio.sleep(1.0)


def _facts(gateway: Gateway) -> dict[str, Any]:
    """What a gateway's heartbeat says of its state now."""
    registry = gateway.registry
    return {
        "models": sorted(m.name for m in gateway.config.models),
        "replicas_ready": sum(
            registry.model_status(m)["ready_replicas"] for m in registry.models()
        ),
        "in_flight": sum(r.in_flight for r in registry),
        "queued": gateway.scheduler.queued_total(),
        "draining": gateway.draining,
    }


def _json(body: bytes, status: int, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    metrics: Metrics | None = request.app.state.metrics
    if metrics is not None:
        metrics.reject(marks(request.scope), exc)
    return _json(exc.body(), exc.status, exc.headers())


def _client_gone(_: Request[Any, Any, Any], __: ClientGone) -> Response[bytes]:
    return _json(b"", 499)  # nobody reads it: the nginx convention for "client closed request"


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    message = str(exc.detail)
    if status == 404 and message == "Not Found":  # no such route (not a 404 a route raised)
        message = _unknown_route(request.method, request.url.path)
    error = HttpError(status, message, exc.headers)
    return _json(error.body(), status, error.headers())


_SERVED = (
    "POST /v1/chat/completions, POST /v1/responses, POST /v1/completions, "
    "POST /v1/embeddings, GET /v1/models"
)


def _unknown_route(method: str, path: str) -> str:
    """OpenAI's words for a URL it does not know, and what this gateway does serve: a client
    calling /v1/assistants, /v1/audio/... or /v1/files learns it is the gateway, not a typo."""
    return (
        f"Invalid URL ({method} {clipped(path)}): llm-gateway does not serve this endpoint; it "
        f"serves {_SERVED}."
    )


def _unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unexpected error", exc_info=exc)
    return _json(GatewayError("The gateway hit an internal error.").body(), 500)
