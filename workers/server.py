"""The worker's aiohttp app: /status and OpenAI's generation endpoints over one engine."""

from __future__ import annotations

import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

from aiohttp import web

from workers.api.embedding_policy import EmbeddingPolicy
from workers.api.params import (
    ChatParams,
    CompletionParams,
    parse_chat,
    parse_completion,
    parse_embedding,
)
from workers.api.responses import ResponseStream, answer_output, chat_answer, response_body
from workers.api.responses import sse as response_sse
from workers.api.responses_request import parse_response_request
from workers.api.shaping import (
    SSE_DONE,
    ChatStreamShaper,
    new_id,
    shape_chat,
    shape_completion,
    shape_completion_chunk,
    shape_embeddings,
    sse_event,
    usage_chunk,
)
from workers.engines.base import (
    CancelToken,
    Engine,
    Model,
)
from workers.engines.loop.green import GreenRunner
from workers.engines.slot_choice import input_text, pick_slot
from workers.errors import ApiError, invalid_request
from workers.failures import as_api_error
from workers.logs import log
from workers.runner import EngineThread, Runner, SlotStream
from workers.status import RequestRecord, WorkerStatus
from workers.wire import (
    USAGE_HEADER,
    EmbeddingResult,
    RawChunk,
    StreamItem,
    Usage,
    usage_comment,
    usage_header,
)

__all__ = ["WORKER_KEY", "Worker", "build_app"]

MAX_BODY_BYTES = 32 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Shaper = Callable[[StreamItem], RawChunk | None]
# Writes a stream's items (the first one, then the rest) to the response; returns its Usage.
Writer = Callable[
    [web.StreamResponse, StreamItem | None, AsyncIterator[StreamItem]], Awaitable[Usage | None]
]


def _shaped(shape: Shaper) -> Writer:
    """A writer of chat or completion chunks, each as its client asked to see it."""
    return partial(_write_items, shape=shape)


class Worker:
    """One model behind `concurrency` slots, each with its own engine thread and the engine
    that serves it (`model.slot(i)`: a batching llama model has one per slot)."""

    def __init__(
        self,
        model: str,
        engine: Model,
        path: str | None,
        concurrency: int = 1,
        phase_fd: int | None = None,
        embedding_policy: EmbeddingPolicy | None = None,
    ) -> None:
        self.model = model
        self.engine = engine
        self.embedding_policy = embedding_policy or EmbeddingPolicy()
        self._runners: list[Runner] = (
            [GreenRunner() for _ in range(concurrency)]
            if engine.green
            else [EngineThread(f"engine-{i}") for i in range(concurrency)]
        )
        self._free = list(range(concurrency))  # slots, the least recently used first
        # Loads the model (seconds of blocking work): a thread, whichever runs the slots.
        first = self._runners[0]
        self.thread = first if isinstance(first, EngineThread) else EngineThread("engine-load")
        self._last_text: dict[int, str] = {}  # each slot's last request input
        self.status = WorkerStatus(model, engine.kind, path, concurrency, phase_fd)

    @asynccontextmanager
    async def generation(
        self, request_id: str, endpoint: str, given: Any = None
    ) -> AsyncIterator[tuple[RequestRecord, Runner, Engine]]:
        """A slot, its engine thread and its engine for one request, recorded in /status.
        `given` is the request's input: the slot whose last input began the same way is
        preferred, its KV cache holding that beginning (workers.engines.slot_choice)."""
        async with self.status.generation(request_id, endpoint) as record:
            # One slot has nothing to choose: its input is not even written out.
            text = input_text(given) if self.status.capacity > 1 else ""
            index = pick_slot(self._free, self._last_text, text)  # the semaphore left one
            self._free.remove(index)
            self._last_text[index], record.slot = text, index
            try:
                yield record, self._runners[index], self.engine.slot(index)
            finally:
                self._free.append(index)

    async def load(self) -> bool:
        """Load the model, then warm it up: no request is served before both have passed."""
        log(f"loading {self.engine.kind} model from {self.status.path}")
        began = time.monotonic()
        try:
            info = await self.thread.call(self.engine.load)
        except Exception as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        self.status.mark_loaded(info, time.monotonic() - began)
        log(f"loaded in {self.status.load_seconds:.2f}s (n_ctx={info.n_ctx}); warming up")
        try:
            await self.thread.call(self.engine.warm_up)
        except Exception as exc:
            return self._failed(f"warm-up failed: {type(exc).__name__}: {exc}")
        self.status.mark_ready()
        log(f"ready in {time.monotonic() - began:.2f}s")
        return True

    def _failed(self, error: str) -> bool:
        self.status.mark_failed(error)
        log(f"load failed: {error}")
        return False

    def require_ready(self) -> None:
        if self.status.state in ("loading", "warming_up"):
            raise ApiError(
                503, "The model is still loading", type="server_error", code="model_loading"
            )
        if self.status.state == "failed":
            message = f"The model failed to load: {self.status.error}"
            raise ApiError(503, message, type="server_error", code="model_load_failed")


WORKER_KEY = web.AppKey("worker", Worker)


def _json_error(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure before the first byte as an OpenAI error body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = as_api_error(exc, request.path)
    except Exception as exc:
        error = as_api_error(exc, request.path)
    return _json_error(error.status, error.body())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # Python's json accepts NaN and Infinity


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read(), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than Python's json can parse ("[[[[...").
        raise invalid_request("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object")
    return body


def _slot(
    request: web.Request, given: Any = None
) -> AbstractAsyncContextManager[tuple[RequestRecord, Runner, Engine]]:
    """A slot for this request (Worker.generation), chosen by its input."""
    return request.app[WORKER_KEY].generation(_request_id(request), request.path, given)


def _request_id(request: web.Request) -> str:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    request["request_id"] = request_id
    return request_id


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    if "request_id" in request:
        response.headers["X-Request-Id"] = request["request_id"]


async def status(request: web.Request) -> web.Response:
    worker = request.app[WORKER_KEY]
    return web.json_response({**worker.status.body(), "batching": worker.engine.batching()})


async def health(request: web.Request) -> web.Response:
    """llama-server's health check: 200 once the model is loaded, 503 with the reason before
    (and after a failed load). What a gateway that has this worker as an upstream checks."""
    request.app[WORKER_KEY].require_ready()
    return web.json_response({"status": "ok"})


async def request_done(request: web.Request) -> web.Response:
    """`{"done": bool}` once the request has ended, or after `timeout` seconds (default 60)."""
    try:
        timeout = min(float(request.query.get("timeout", "60")), 3600.0)
    except ValueError:
        raise invalid_request("timeout must be a number of seconds", "timeout") from None
    status = request.app[WORKER_KEY].status
    return web.json_response({"done": await status.wait_done(request.match_info["id"], timeout)})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER_KEY]
    params = parse_chat(await _json_body(request))
    worker.require_ready()
    id_, created, cancel = new_id("chatcmpl"), int(time.time()), CancelToken()
    async with _slot(request, params.messages) as (record, thread, engine):
        if params.stream:
            shapers = _ChoiceShapers(
                partial(_chat_stream_shaper, worker.model, id_, created, params)
            )
            make = partial(_chat_generations, engine, params, cancel)
            return await _sse(request, thread.stream(make, cancel), _shaped(shapers.shape), record)

        def run_all() -> list[RawChunk]:
            return [engine.chat(params, cancel) for _ in range(params.n)]

        raws = await thread.call(run_all, cancel)
        bodies = [
            shape_chat(
                raw,
                model=worker.model,
                id_=id_,
                top_logprobs=params.top_logprobs,
                legacy_functions=params.legacy_functions,
            )
            for raw in raws
        ]
        return _answer(_one_answer(bodies))


def _chat_generations(
    engine: Engine, params: ChatParams, cancel: CancelToken
) -> Iterator[StreamItem]:
    """`n` generations one after another, each its own choice; one usage at the end."""
    total: Usage | None = None
    for index in range(params.n):
        for item in engine.chat_stream(params, cancel):
            if isinstance(item, Usage):
                total = item if total is None else _add_completion(total, item)
                continue
            for choice in item.get("choices") or []:
                choice["index"] = index
            yield item
    yield total or Usage(0, 0)


def _add_completion(total: Usage, more: Usage) -> Usage:
    """Usage of one more choice of the same prompt: OpenAI counts the prompt once."""
    return Usage(total.prompt_tokens, total.completion_tokens + more.completion_tokens)


def _one_answer(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """`n` whole chat answers as one: the choices numbered in turn, the prompt counted once."""
    body = bodies[0]
    body["choices"] = [
        {**choice, "index": index}
        for index, answer in enumerate(bodies)
        for choice in answer["choices"]
    ]
    completion = sum(answer["usage"]["completion_tokens"] for answer in bodies)
    prompt = body["usage"]["prompt_tokens"]
    body["usage"] = {
        **body["usage"],
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return body


class _ChoiceShapers:
    """A stream's shapers, one per choice: each choice's tool-call deltas have their own state."""

    def __init__(self, make: Callable[[], ChatStreamShaper]):
        self._make = make
        self._shapers: dict[int, ChatStreamShaper] = {0: make()}

    def shape(self, item: StreamItem) -> RawChunk | None:
        if isinstance(item, Usage):
            return _shape_chat_item(self._shapers[0], item)
        choices = item.get("choices") or [{}]
        index = choices[0].get("index", 0) if isinstance(choices[0], dict) else 0
        shaper = self._shapers.get(index) or self._shapers.setdefault(index, self._make())
        return _shape_chat_item(shaper, item)


def _chat_stream_shaper(model: str, id_: str, created: int, params: ChatParams) -> ChatStreamShaper:
    return ChatStreamShaper(
        model=model,
        id_=id_,
        created=created,
        include_usage=params.include_usage,
        top_logprobs=params.top_logprobs,
        legacy_functions=params.legacy_functions,
    )


def _shape_chat_item(shaper: ChatStreamShaper, item: StreamItem) -> RawChunk | None:
    if isinstance(item, Usage):
        if not shaper.include_usage:
            return None
        return usage_chunk(
            item,
            object_="chat.completion.chunk",
            model=shaper.model,
            id_=shaper.id,
            created=shaper.created,
        )
    return shaper.chunk(item)


async def completions(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER_KEY]
    params = parse_completion(await _json_body(request))
    worker.require_ready()
    id_, created, cancel = new_id("cmpl"), int(time.time()), CancelToken()
    async with _slot(request, params.prompts) as (record, thread, engine):
        if params.stream:
            shaper = partial(_shape_completion_item, worker.model, id_, created, params)
            make = partial(_chain_prompts, engine, params, cancel)
            return await _sse(request, thread.stream(make, cancel), _shaped(shaper), record)

        def run_all() -> list[RawChunk]:
            return [
                engine.complete(p, params, cancel) for p in params.prompts for _ in range(params.n)
            ]

        raws = await thread.call(run_all, cancel)
        body = shape_completion(raws, model=worker.model, id_=id_)
        return _answer(_prompts_counted_once(body, raws, params.n))


def _prompts_counted_once(body: dict[str, Any], raws: list[RawChunk], n: int) -> dict[str, Any]:
    """With n choices per prompt, each prompt's tokens once (as OpenAI counts them)."""
    if n == 1:
        return body
    prompt = sum((raw.get("usage") or {}).get("prompt_tokens", 0) for raw in raws[::n])
    usage = body["usage"]
    body["usage"] = {
        **usage,
        "prompt_tokens": prompt,
        "total_tokens": prompt + usage["completion_tokens"],
    }
    return body


def _chain_prompts(
    engine: Engine, params: CompletionParams, cancel: CancelToken
) -> Iterator[StreamItem]:
    """Stream several prompts (n choices each) one after another, renumbering choices; one
    usage at the end, each prompt counted once."""
    total = Usage(0, 0)
    for number, prompt in enumerate(params.prompts):
        for turn in range(params.n):
            for item in engine.complete_stream(prompt, params, cancel):
                if isinstance(item, Usage):
                    total = total + item if turn == 0 else _add_completion(total, item)
                    continue
                for choice in item.get("choices") or []:
                    choice["index"] = number * params.n + turn
                yield item
    yield total


def _shape_completion_item(
    model: str, id_: str, created: int, params: CompletionParams, item: StreamItem
) -> RawChunk | None:
    if isinstance(item, Usage):
        if not params.include_usage:
            return None
        return usage_chunk(item, object_="text_completion", model=model, id_=id_, created=created)
    return shape_completion_chunk(item, model=model, id_=id_, created=created)


async def embeddings(request: web.Request) -> web.Response:
    worker = request.app[WORKER_KEY]
    params = parse_embedding(await _json_body(request))
    worker.require_ready()
    worker.embedding_policy.check_input(params.inputs)
    cancel = CancelToken()  # set if the client goes away: the engine stops between inputs
    async with _slot(request) as (_, thread, engine):
        result = await thread.call(partial(engine.embed, params.inputs, cancel), cancel)
    fitted = worker.embedding_policy.fit(result.vectors, params.dimensions)
    result = EmbeddingResult(fitted, result.prompt_tokens)
    body = shape_embeddings(result, model=worker.model, encoding_format=params.encoding_format)
    return _answer(body)


async def responses(request: web.Request) -> web.StreamResponse:
    """The Responses API on the chat path (workers.api.responses)."""
    worker = request.app[WORKER_KEY]
    params, meta = parse_response_request(await _json_body(request), worker.model)
    worker.require_ready()
    cancel = CancelToken()
    async with _slot(request, params.messages) as (record, thread, engine):
        if params.stream:
            make = partial(engine.chat_stream, params, cancel)
            write = partial(_write_response_events, shaper=ResponseStream(meta))
            return await _sse(request, thread.stream(make, cancel), write, record)
        raw = await thread.call(partial(engine.chat, params, cancel), cancel)
        answer, usage = chat_answer(raw), raw.get("usage") or {}
        counted = Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        body = response_body(meta, answer_output(meta, answer), counted, answer.finish)
        return _with_usage(body, counted)


async def _write_response_events(
    response: web.StreamResponse,
    first: StreamItem | None,
    rest: AsyncIterator[StreamItem],
    shaper: ResponseStream,
) -> Usage:
    """The opening events, an event per text delta, the closing ones; the generation's Usage."""
    usage, item = Usage(0, 0), first
    for event in shaper.opening():
        await response.write(response_sse(event))
    while item is not None:
        if isinstance(item, Usage):
            usage = item
        else:
            for event in shaper.chunk(item):
                await response.write(response_sse(event))
        item = await anext(rest, None)
    for event in shaper.closing(usage):
        await response.write(response_sse(event))
    return usage


def _answer(body: dict[str, Any]) -> web.Response:
    """A whole answer, its usage repeated in a header for the gateway (workers.wire)."""
    usage = body["usage"]
    return _with_usage(body, Usage(usage["prompt_tokens"], usage.get("completion_tokens", 0)))


def _with_usage(body: dict[str, Any], usage: Usage) -> web.Response:
    return web.json_response(body, headers={USAGE_HEADER: usage_header(usage)})


async def _sse(
    request: web.Request,
    stream: SlotStream[StreamItem],
    write: Writer,
    record: RequestRecord,
) -> web.StreamResponse:
    try:
        return await _relay(request, stream, write, record)
    finally:
        # Whatever happened, stop the generation and keep the lock until the thread is free.
        await stream.close()


async def _relay(
    request: web.Request,
    stream: SlotStream[StreamItem],
    write: Writer,
    record: RequestRecord,
) -> web.StreamResponse:
    # Wait for the first item before sending headers: an error here is a real HTTP status.
    first = await anext(stream, None)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        usage = await write(response, first, stream)
    except ConnectionError:
        record.outcome = "cancelled"
        return response
    except Exception as exc:
        record.outcome = "error"
        log(f"generation failed mid-stream: {exc!r}")
        await _write_quietly(response, as_api_error(exc, request.path, streaming=True).event())
        return response
    await response.write(SSE_DONE if usage is None else usage_comment(usage) + SSE_DONE)
    await response.write_eof()
    return response


async def _write_items(
    response: web.StreamResponse,
    first: StreamItem | None,
    rest: AsyncIterator[StreamItem],
    shape: Shaper,
) -> Usage | None:
    """Write each item as the client asked to see it; return the generation's Usage."""
    usage, item = None, first
    while item is not None:
        if isinstance(item, Usage):
            usage = item
        await _write_chunk(response, shape(item))
        item = await anext(rest, None)
    return usage


async def _write_chunk(response: web.StreamResponse, chunk: RawChunk | None) -> None:
    if chunk is not None:
        await response.write(sse_event(chunk))


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        await response.write(data)


def _requires_secret(secret: str) -> Any:
    expected = f"Bearer {secret}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        sent = request.headers.get("Authorization", "").encode("latin-1", errors="replace")
        # /health says only whether the model is loaded: open, as llama-server's, so that a
        # Kubernetes probe or a load balancer needs no secret.
        if request.path != "/health" and not hmac.compare_digest(sent, expected):
            refused = ApiError(
                401,
                "This worker serves only its gateway.",
                type="invalid_request_error",
                code="invalid_api_key",
            )
            return _json_error(401, refused.body())
        return await handler(request)

    return check


def build_app(worker: Worker, secret: str | None = None) -> web.Application:
    middlewares = [_errors] if not secret else [_requires_secret(secret), _errors]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[WORKER_KEY] = worker
    app.on_response_prepare.append(_echo_request_id)
    app.router.add_get("/status", status)
    app.router.add_get("/health", health)
    app.router.add_get("/requests/{id}/done", request_done)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/responses", responses)
    return app
