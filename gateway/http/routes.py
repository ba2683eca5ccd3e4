"""The HTTP routes: OpenAI's API, probes and the admin view, all thin over the Gateway state."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.types import ASGIApp, Receive

from ..config.file import KeyConfig, ModelConfig, ServerConfig
from ..errors import (
    BodyTooLarge,
    Forbidden,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    clipped,
)
from ..limits.local import estimate_tokens
from ..observe.gateways import Gateways
from ..observe.marks import marks
from ..observe.metrics import Metrics
from ..observe.recent import Recent
from ..pool.affinity import prefix_hashes, prompt_text
from ..reloader import Reloader
from ..state import Gateway
from .auth import ANONYMOUS, identify, is_loopback, presented_key
from .forward import Forward
from .relay import ClientGone
from .request_ids import request_id as request_id_of
from .ui import UI, UI_HEADERS, VERSION

__all__ = ["ROUTES"]


class _RouteFields(msgspec.Struct):
    """The only fields of a request body the gateway reads; the rest passes through untouched
    (the worker checks the token counts: here they only size a key's token reservation)."""

    model: str
    stream: bool | None = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    max_output_tokens: Any = None  # the Responses API's name for it
    n: Any = None

    def answer_limit(self) -> int | None:
        """The most tokens the answer may have, if the client said so (as an integer)."""
        for value in (self.max_completion_tokens, self.max_tokens, self.max_output_tokens):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
        return None


_route_decoder = msgspec.json.Decoder(_RouteFields)
_JSON = "application/json"
# The text format every Prometheus reads (Litestar adds the charset to text/* types itself).
_PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def _state(request: Request[Any, Any, Any]) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _caller(request: Request[Any, Any, Any]) -> tuple[Gateway, KeyConfig]:
    """The gateway state and who is calling: the request's key (auth.keys), or the anonymous
    caller of an open gateway; 401 otherwise.

    A plain call rather than a Litestar guard: Litestar copies the handler for every guard
    call, a measurable share of the per-request cost.
    """
    gateway = _state(request)
    auth = gateway.config.auth
    caller: KeyConfig | None = ANONYMOUS
    if auth.keys:  # open, no header to read: building Litestar's headers is not free
        headers = request.headers
        key = presented_key(headers.get("authorization", ""), headers.get("api-key", ""))
        caller = identify(auth, key)
    if caller is None:
        # OpenAI's words: clients (LiteLLM's) tell an AuthenticationError by them.
        raise Unauthorized(
            "Incorrect API key provided (or none); send 'Authorization: Bearer "
            "<key>' with a key of this gateway."
        )
    marks(request.scope).key = caller.name
    return gateway, caller


def _admin(request: Request[Any, Any, Any]) -> Gateway:
    """With keys configured, admin routes need an admin key (401 without a key, 403 for another
    one); with none, they answer loopback clients only (reload and the config view must not be
    open to anyone who can reach the port)."""
    gateway, caller = _caller(request)
    if gateway.config.auth.keys:
        if caller.admin:
            return gateway
        if caller.digest:
            raise Forbidden(f"The key '{caller.name}' may not call admin routes.")
        raise Unauthorized(
            "Incorrect API key provided (or none): admin routes need an admin "
            "key; send 'Authorization: Bearer <key>'."
        )
    client = request.scope.get("client")
    if not is_loopback(client[0] if client else None):
        raise Forbidden(
            "Admin routes answer only loopback clients while auth.keys is empty; "
            "configure an admin key to reach them from elsewhere."
        )
    return gateway


async def _read_body(request: Request[Any, Any, Any], server: ServerConfig) -> bytes:
    """The body, at most server.max_body_bytes; silence of server.body_timeout between chunks
    is a 408. uvicorn usually holds the whole body already: one receive and no timer."""
    limit = server.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    if _take(await request.receive(), body, limit):
        await _read_rest(request.receive, body, limit, server.body_timeout)
    return bytes(body)


async def _read_rest(receive: Receive, body: bytearray, limit: int, idle: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        # One timer, pushed back at each chunk: a client may send slowly, not fall silent.
        async with asyncio.timeout(idle) as deadline:
            while _take(await receive(), body, limit):
                deadline.reschedule(loop.time() + idle)
    except TimeoutError as exc:
        raise RequestTimeout(f"The request body stopped arriving for {idle:g} s.") from exc


def _take(message: Any, body: bytearray, limit: int) -> bool:
    """Add one ASGI receive message's body to `body`; return whether more is to come."""
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body += message.get("body", b"")
    if len(body) > limit:
        raise _too_large(limit)
    return bool(message.get("more_body", False))


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")


def _route_fields(body: bytes) -> _RouteFields:
    try:
        return _route_decoder.decode(body)
    except msgspec.ValidationError as exc:
        param = "model" if "model" in str(exc) else "stream" if "stream" in str(exc) else None
        raise InvalidRequest(f"Invalid request body: {exc}", param=param) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # msgspec, on JSON nested thousands deep
        raise InvalidRequest("Request body is nested too deeply.") from exc


def _prefix(body: bytes) -> list[bytes]:
    """The prompt's block hashes (the body is valid JSON: its route fields were read)."""
    fields = msgspec.json.decode(body)
    return prefix_hashes(prompt_text(fields)) if isinstance(fields, dict) else []


async def _forward(request: Request[Any, Any, Any], path: str, can_stream: bool) -> ASGIApp:
    gateway, caller = _caller(request)
    if gateway.draining:
        raise Unavailable(
            "The gateway is shutting down; retry on another instance.",
            retry_after=5,
            code="shutting_down",
        )
    body = await _read_body(request, gateway.config.server)
    fields = _route_fields(body)
    if fields.stream and not can_stream:
        raise InvalidRequest(f"{path} does not support streaming.", param="stream")
    if fields.stream and request.scope.get("http_version") == "1.0":
        # An HTTP/1.0 client cannot take a chunked body (RFC 9112), and a stream has no length.
        raise InvalidRequest(
            "Streaming needs HTTP/1.1; send the request over HTTP/1.1 or without stream: true.",
            param="stream",
        )
    model = gateway.resolve(fields.model, caller)
    if path in model.unserved:  # its engine cannot: a 400 saying so, not the engine's 404 or 501
        raise InvalidRequest(model.unserved[path], param="model")
    noted = marks(request.scope)
    noted.model = model.name  # the metrics' label: never the name or alias the client sent
    request_id = noted.request_id = request_id_of(request.scope)
    context = gateway.registry.context(model.name)
    reserve = estimate_tokens(len(body), fields.answer_limit(), fields.n, context)
    scheduler = gateway.scheduler
    running = scheduler.running(caller)
    # A replica first, if one is free: its concurrency slot then comes in the limits' one check.
    prefix = _prefix(body) if model.affinity else ()
    lease = scheduler.try_acquire(model.name, caller, prefix)
    try:
        ticket = await gateway.limits.admit(
            caller, request_id, model.name, reserve, running, with_slot=lease is not None
        )
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    forward = Forward(gateway, ticket, model, path, body, request.scope, request.receive, prefix)
    try:
        return await forward.answer(bool(fields.stream), lease)
    except BaseException as exc:
        forward.settle_unsent()
        if isinstance(exc, GatewayError):
            exc.extra_headers = {**ticket.quota.headers(), **(exc.extra_headers or {})}
        raise


@post("/v1/chat/completions")
async def chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _forward(request, "/v1/chat/completions", can_stream=True)


@post("/v1/completions")
async def completions(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _forward(request, "/v1/completions", can_stream=True)


@post("/v1/responses")
async def responses(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _forward(request, "/v1/responses", can_stream=True)


@post("/v1/embeddings")
async def embeddings(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _forward(request, "/v1/embeddings", can_stream=False)


def _model_entry(gateway: Gateway, name: str) -> dict[str, Any]:
    """OpenAI's model object, with where it stands here (llama.cpp's router says it so):
    `status.value` loaded, loading or unloaded (on demand, no replica running)."""
    state = gateway.registry.load_state(gateway.by_name[name].name)
    return {
        "id": name,
        "object": "model",
        "created": gateway.started_at,
        "owned_by": "llm-gateway",
        "status": {"value": state},
    }


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    gateway, caller = _caller(request)
    data = [_model_entry(gateway, name) for name in gateway.visible(caller)]
    return {"object": "list", "data": data}


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request[Any, Any, Any], model_id: str) -> dict[str, Any]:
    gateway, caller = _caller(request)
    name = model_id.lstrip("/")
    gateway.resolve(name, caller)
    return _model_entry(gateway, name)


@get("/health")
async def health() -> dict[str, str]:
    """Liveness: the gateway process answers."""
    return {"status": "ok"}


@get("/ready")
async def ready(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Readiness: every model has at least one ready replica and the gateway is not draining."""
    gateway = _state(request)
    registry = gateway.registry
    models = {model: gateway.model_status(model) for model in registry.models()}
    all_ready = all(status["ready"] for status in models.values()) and not gateway.draining
    state = "draining" if gateway.draining else "ready" if all_ready else "not_ready"
    body = {"status": state, "models": models}
    return Response(
        msgspec.json.encode(body), status_code=200 if all_ready else 503, media_type=_JSON
    )


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus's text format; open, like the probes (it holds no key and no prompt), unless
    server.metrics_auth asks for a configured key (any: give the scraper one with no models)."""
    gateway = _state(request)
    if gateway.config.server.metrics_auth and not _caller(request)[1].digest:
        raise Unauthorized(
            "Incorrect API key provided (or none): /metrics needs an API key "
            "(server.metrics_auth: true)."
        )
    registry: Metrics | None = request.app.state.metrics
    if registry is None:
        raise NotFoundException("Metrics are off (server.metrics: false).")
    return Response(registry.render(), media_type=_PROMETHEUS_TEXT)


@get("/admin/workers")
async def admin_workers(request: Request[Any, Any, Any]) -> dict[str, Any]:
    gateway = _admin(request)
    queued = {model: gateway.scheduler.queued(model) for model in gateway.registry.models()}
    workers = [replica.describe() for replica in gateway.registry]
    return {"object": "list", "data": workers, "queued": queued}


@get("/admin/requests")
async def admin_requests(request: Request[Any, Any, Any], limit: int = 50) -> dict[str, Any]:
    """The last requests (up to 200), newest first, as the request log has them."""
    _admin(request)
    recent: Recent = request.app.state.recent
    return {"object": "list", "data": recent.requests(max(0, min(limit, 200)))}


@get("/admin/stats")
async def admin_stats(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Per-second requests, errors, mean TTFT and queue depth of the last ten minutes; the
    gateway's start, version and config version."""
    gateway = _admin(request)
    recent: Recent = request.app.state.recent
    version = _reloader(request).status()["version"]
    return {
        "object": "list",
        "data": recent.series(),
        "started_at": gateway.started_at,
        "version": VERSION,
        "config_version": version,
    }


@get("/ui", media_type="text/html", response_headers=UI_HEADERS)
async def status_page() -> bytes:
    """The status page (gateway/http/ui/): open, like the probes; its data needs the admin key."""
    return UI["index.html"]


@get("/ui/{name:str}")
async def status_page_file(name: str) -> Response[bytes]:
    if name not in UI or name == "index.html":
        raise NotFoundException(f"No file {name} in the status page.")
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    return Response(UI[name], media_type=kind, headers=UI_HEADERS)


@get("/admin/usage")
async def admin_usage(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Requests and prompt/completion tokens by key, model and day (UTC), from the store the
    limits use: this process, or Redis (then every gateway's)."""
    gateway = _admin(request)
    return {"object": "list", "data": await gateway.limits.usage()}


@get("/admin/gateways")
async def admin_gateways(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The gateways alive on this Redis (heartbeats), this one first; without Redis, this one."""
    _admin(request)
    gateways: Gateways = request.app.state.gateways
    return {"object": "list", "data": await gateways.alive()}


def _reloader(request: Request[Any, Any, Any]) -> Reloader:
    reloader: Reloader = request.app.state.reloader
    return reloader


@post("/admin/reload", status_code=200)
async def admin_reload(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Reload the config file now; 200 with the changes, or 400 naming what is wrong."""
    _admin(request)
    outcome = await _reloader(request).reload()
    if not outcome.ok:
        raise InvalidRequest(outcome.error or "reload failed", code="reload_failed")
    body = {"ok": True, "version": outcome.version, "changes": outcome.changes}
    return Response(msgspec.json.encode(body), media_type=_JSON)


@post("/admin/models/{name:str}/load", status_code=200)
async def admin_load(request: Request[Any, Any, Any], name: str) -> dict[str, Any]:
    """Start one more replica of a model now (up to its max), evicting for it as demand would."""
    gateway = _admin(request)
    model = _configured(gateway, name)
    return {"model": model.name, "started": await gateway.scaler.load(model)}


@post("/admin/models/{name:str}/unload", status_code=200)
async def admin_unload(request: Request[Any, Any, Any], name: str) -> dict[str, Any]:
    """Stop a model's replicas above its min, each once it has finished what it serves."""
    gateway = _admin(request)
    model = _configured(gateway, name)
    return {"model": model.name, "stopped": await gateway.scaler.unload(model)}


@post("/admin/workers/{name:str}/{index:int}/restart", status_code=200)
async def admin_restart(request: Request[Any, Any, Any], name: str, index: int) -> dict[str, Any]:
    """Drain one local replica, stop its worker and start a new one in its slot."""
    gateway = _admin(request)
    model = _configured(gateway, name)
    replica = next(
        (
            r
            for r in gateway.supervisor.local(model.name)
            if r.index == index and r.state.value not in ("draining", "stopped")
        ),
        None,
    )
    if replica is None:
        raise InvalidRequest(f"Model '{model.name}' has no running local replica {index}.")
    await gateway.supervisor.retire(replica)
    gateway.supervisor.start_replica(model, index)
    return {"model": model.name, "restarted": replica.describe_name()}


@post("/admin/keys/{name:str}/reset", status_code=200)
async def admin_reset_key(request: Request[Any, Any, Any], name: str) -> dict[str, Any]:
    """Refill a key's rpm and tpm buckets, on every gateway sharing its Redis: the remedy for a
    key locked out (its in-flight requests and usage stay as they are)."""
    gateway = _admin(request)
    key = next((k for k in (*gateway.config.auth.keys, ANONYMOUS) if k.name == name), None)
    if key is None:
        raise NotFound(f"No key named '{clipped(name)}' in auth.keys.")
    await gateway.limits.reset(key)
    return {"key": key.name, "reset": True}


def _configured(gateway: Gateway, name: str) -> ModelConfig:
    model = gateway.by_name.get(name)
    if model is None:
        raise ModelNotFound(name, list(gateway.by_name))
    return model


@get("/admin/config")
async def admin_config(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The running config's version and models, and how the last reload went."""
    _admin(request)
    return _reloader(request).status()


ROUTES = [
    chat_completions,
    completions,
    responses,
    embeddings,
    list_models,
    retrieve_model,
    health,
    ready,
    metrics,
    admin_workers,
    admin_usage,
    admin_reload,
    admin_config,
    admin_gateways,
    admin_requests,
    admin_stats,
    admin_load,
    admin_unload,
    admin_restart,
    admin_reset_key,
    status_page,
    status_page_file,
]
