"""Prometheus metrics (`GET /metrics`): names under llm_gateway_, every family declared at start.

Request families are recorded by MetricsMiddleware, an ASGI wrapper around the whole app (every
answer of the API routes, errors included) and by the error handler (rejections by reason).
Replica and queue families are read from the registry and the scheduler when Prometheus
scrapes, so they cost the hot path nothing. Labels are bounded: the configured model name
(never what a client sent), a fixed endpoint name, the status code, the replica index, the
configured key name (never the key).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import GatewayError
from ..replicas.lifecycle import ReplicaState
from .logs import log_request
from .marks import MARKS_KEY, Marks
from .recent import Recent

if TYPE_CHECKING:
    from ..state import Gateway

__all__ = [
    "LATENCY_BUCKETS",
    "Metrics",
    "MetricsMiddleware",
    "rejection_reason",
]

# Seconds, from a cached answer's milliseconds to a long generation's minutes.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
# Waiting for a replica: none at all (most requests) up to queue_timeout.
QUEUE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The gateway's own share of a request: a fraction of a millisecond when all is well.
OVERHEAD_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
# Between two tokens of a stream: a GPU's milliseconds to a loaded CPU's seconds.
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ENDPOINTS = {
    "/v1/chat/completions": "chat_completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
# Error codes (gateway/errors.py) that are a refusal to serve, by the reason ops graph.
_REJECTIONS = {
    "rate_limit_exceeded": "queue_full",
    "queue_timeout": "queue_timeout",
    "invalid_api_key": "auth",
    "forbidden": "auth",
    "shutting_down": "draining",
    "model_unavailable": "unavailable",
}


def rejection_reason(error: GatewayError) -> str | None:
    """The `reason` label of a refused request's error, or None if it is no refusal."""
    return error.rejection or _REJECTIONS.get(error.code or "")


class Metrics:
    """The families, in a registry of their own (not prometheus_client's global one)."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llm_gateway_requests",
            "Requests answered, by model, endpoint, status code and key name",
            ["model", "endpoint", "status", "key"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "llm_gateway_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "llm_gateway_request_queue_time_seconds",
            "Time a request waited for a free replica",
            ["model"],
            buckets=QUEUE_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "llm_gateway_time_to_first_token_seconds",
            "Streams: time from a request's arrival to its first event",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.itl = Histogram(
            "llm_gateway_inter_token_latency_seconds",
            "Streams: time between two successive events from the worker",
            ["model", "endpoint"],
            buckets=ITL_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "llm_gateway_overhead_seconds",
            "Time a request spent in the gateway itself: neither queued nor at its worker",
            ["model", "endpoint"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "llm_gateway_prompt_tokens",
            "Prompt tokens processed (the worker's count)",
            ["model", "endpoint", "key"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "llm_gateway_completion_tokens",
            "Tokens generated (the worker's count)",
            ["model", "endpoint", "key"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "llm_gateway_rejected_requests",
            "Requests refused, by reason: "
            "queue_full, queue_timeout, rate_limit, auth, draining, "
            "unavailable",
            ["model", "reason", "key"],
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(gateway))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def reject(self, noted: Marks, error: GatewayError) -> None:
        """Count `error` by its reason, if it is a refusal to serve."""
        reason = rejection_reason(error)
        if reason is not None:
            self.rejected.labels(noted.model, reason, noted.key).inc()


@dataclass(frozen=True)
class _Series:
    """One model and endpoint's histograms, labelled once."""

    duration: Any
    ttft: Any
    itl: Any
    queue_time: Any
    overhead: Any


@dataclass(frozen=True)
class _KeySeries:
    """One model, endpoint and key's counters, labelled once."""

    prompt_tokens: Any
    completion_tokens: Any


class MetricsMiddleware:
    """Counts and times every answer of the OpenAI endpoints; passes anything else through."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None, recent: Recent | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.recent = recent  # the last requests, for /admin/requests and /admin/stats
        # Bounded like the labels: configured models x endpoints (x status codes).
        self._cache: dict[tuple[str, str], _Series] = {}
        self._counters: dict[tuple[str, str, int, str], Any] = {}
        self._tokens: dict[tuple[str, str, str], _KeySeries] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            _ENDPOINTS.get(scope.get("path", "")) if scope["type"] == ScopeType.HTTP else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        noted = scope[MARKS_KEY] = Marks()  # type: ignore[literal-required]
        started, status, first_event = time.perf_counter(), 499, 0.0  # 499: the client left

        async def observe(message: Message) -> None:
            nonlocal status, first_event
            if message["type"] == "http.response.start":
                status = message["status"]
                first_event = -1.0 if _is_stream(message["headers"]) else 0.0
            elif first_event < 0 and not _is_comment(message):
                first_event = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self._record(endpoint, noted, noted.failed_status or status, started, first_event)

    def _record(
        self, endpoint: str, noted: Marks, status: int, started: float, first_event: float
    ) -> None:
        now = time.perf_counter()
        ttft = first_event - started if first_event > 0 else None
        record = _request_record(noted, endpoint, status, now - started, ttft)
        log_request(record)
        if self.recent is not None:
            self.recent.add(record)
        if self.metrics is None:
            return  # server.metrics: false; the request log only
        series = self._series(noted.model, endpoint)
        self._answered(noted.model, endpoint, status, noted.key).inc()
        series.duration.observe(now - started)
        if first_event > 0:
            series.ttft.observe(first_event - started)
        for gap in noted.event_gaps:
            series.itl.observe(gap)
        if noted.usage is not None:
            tokens = self._key_series(noted.model, endpoint, noted.key)
            tokens.prompt_tokens.inc(noted.usage.prompt_tokens)
            tokens.completion_tokens.inc(noted.usage.completion_tokens)
        if noted.upstream_started is None:
            return  # refused before it reached a worker
        series.queue_time.observe(noted.queue_wait)
        if noted.upstream_ended is not None:
            before = noted.upstream_started - started - noted.queue_wait
            series.overhead.observe(before + now - noted.upstream_ended)

    def _series(self, model: str, endpoint: str) -> _Series:
        # Cached: prometheus-client's labels() takes a lock and builds a key on every call.
        found = self._cache.get((model, endpoint))
        if found is None:
            metrics = self.metrics
            assert metrics is not None
            found = self._cache[(model, endpoint)] = _Series(
                metrics.duration.labels(model, endpoint),
                metrics.ttft.labels(model, endpoint),
                metrics.itl.labels(model, endpoint),
                metrics.queue_time.labels(model),
                metrics.overhead.labels(model, endpoint),
            )
        return found

    def _key_series(self, model: str, endpoint: str, key: str) -> _KeySeries:
        found = self._tokens.get((model, endpoint, key))
        if found is None:
            metrics = self.metrics
            assert metrics is not None
            found = self._tokens[(model, endpoint, key)] = _KeySeries(
                metrics.prompt_tokens.labels(model, endpoint, key),
                metrics.completion_tokens.labels(model, endpoint, key),
            )
        return found

    def _answered(self, model: str, endpoint: str, status: int, key: str) -> Any:
        labels = (model, endpoint, status, key)
        found = self._counters.get(labels)
        if found is None:
            assert self.metrics is not None
            found = self._counters[labels] = self.metrics.requests.labels(*labels)
        return found


def _request_record(
    noted: Marks, endpoint: str, status: int, duration: float, ttft: float | None
) -> dict[str, Any]:
    """The request log's fields (times in milliseconds)."""
    usage = noted.usage
    return {
        "request_id": noted.request_id,
        "key": noted.key,
        "model": noted.model,
        "endpoint": endpoint,
        "replica": noted.replica,
        "status": status,
        "queue_wait_ms": round(noted.queue_wait * 1000, 3),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
        "duration_ms": round(duration * 1000, 3),
        "prompt_tokens": None if usage is None else usage.prompt_tokens,
        "completion_tokens": None if usage is None else usage.completion_tokens,
    }


def _is_comment(message: Message) -> bool:
    """A body message with nothing, or an SSE comment (": queued position=2"): no token yet."""
    body: Any = message.get("body")
    return not body or body[:1] == b":"


def _is_stream(headers: Any) -> bool:
    return any(
        name == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in headers
    )


class _PoolCollector(Collector):
    """Replica and queue figures, read from the registry and the scheduler at each scrape."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        registry, scheduler = self._gateway.registry, self._gateway.scheduler
        families = _replica_families()
        for replica in registry:
            labels = [replica.model, str(replica.index)]
            for state in ReplicaState:
                families["state"].add_metric([*labels, state.value], replica.state is state)
            families["in_flight"].add_metric(labels, replica.in_flight)
            families["served"].add_metric(labels, replica.requests_served)
            families["restarts"].add_metric(labels, replica.restarts)
            families["ejections"].add_metric(labels, replica.ejections)
            families["info"].add_metric([*labels, replica.device], 1)
            if replica.load_seconds is not None:
                families["load"].add_metric(labels, replica.load_seconds)
            for key, value in replica.engine.items():
                if key in _ENGINE_COUNTERS:
                    families[key].add_metric(labels, value)
        queued = GaugeMetricFamily(
            "llm_gateway_queue_depth", "Requests waiting for a replica", labels=["model"]
        )
        for model in registry.models():
            queued.add_metric([model], scheduler.queued(model))
        yield from (*families.values(), queued)


# A worker's engine counters (its /status `batching`, read at each status check), exported per
# replica: rate(sequences) / rate(steps) is the batch occupancy, rate(decode_seconds) /
# rate(steps) the step time, rate(generated_tokens) the tokens/s of one model copy.
_ENGINE_COUNTERS = {
    "steps": ("llm_gateway_replica_decode_steps", "Decode steps its engine loop has run"),
    "sequences": (
        "llm_gateway_replica_batch_sequences",
        "Slots served by its decode steps, summed (over steps: the batch occupancy)",
    ),
    "decoded_tokens": (
        "llm_gateway_replica_decoded_tokens",
        "Tokens its decode steps have evaluated, prompts included",
    ),
    "generated_tokens": ("llm_gateway_replica_generated_tokens", "Tokens its engine has generated"),
    "decode_seconds": (
        "llm_gateway_replica_decode_seconds",
        "Time its engine has spent in llama_decode",
    ),
}


def _replica_families() -> dict[str, Any]:
    replica = ["model", "replica"]
    engine = {
        key: CounterMetricFamily(name, text, labels=replica)
        for key, (name, text) in _ENGINE_COUNTERS.items()
    }
    return {
        **engine,
        "state": GaugeMetricFamily(
            "llm_gateway_replica_state",
            "1 for the state each replica is in, 0 for the others",
            labels=[*replica, "state"],
        ),
        "in_flight": GaugeMetricFamily(
            "llm_gateway_replica_in_flight", "Requests a replica is serving now", labels=replica
        ),
        "served": CounterMetricFamily(
            "llm_gateway_replica_requests", "Requests a replica has served", labels=replica
        ),
        "restarts": CounterMetricFamily(
            "llm_gateway_replica_restarts",
            "Times a replica's worker has exited and been started again",
            labels=replica,
        ),
        "ejections": CounterMetricFamily(
            "llm_gateway_replica_ejections",
            "Times a replica was "
            "taken out of rotation for answers failing in a row "
            "(outlier ejection)",
            labels=replica,
        ),
        "load": GaugeMetricFamily(
            "llm_gateway_replica_load_seconds",
            "How long a replica's worker took from its start to ready (load and warm-up)",
            labels=replica,
        ),
        "info": GaugeMetricFamily(
            "llm_gateway_replica_info",
            "Always 1: where each replica runs (device: its CUDA_VISIBLE_DEVICES, or cpu)",
            labels=[*replica, "device"],
        ),
    }
