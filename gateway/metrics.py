"""Prometheus metrics (`GET /metrics`): names under llm_gateway_, every family declared at start.

Request families are recorded by MetricsMiddleware, an ASGI wrapper around the whole app (every
answer of the API routes, errors included) and by the error handler (rejections by reason).
Replica and queue families are read from the registry and the scheduler when Prometheus
scrapes, so they cost the hot path nothing. Labels are bounded: the configured model name
(never what a client sent), a fixed endpoint name, the status code, the replica index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .lifecycle import ReplicaState

if TYPE_CHECKING:
    from .state import Gateway

__all__ = ["LATENCY_BUCKETS", "MODEL_KEY", "Metrics", "MetricsMiddleware", "rejection_reason"]

# Seconds, from a cached answer's milliseconds to a long generation's minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0)  # fmt: skip
MODEL_KEY = "llm_gateway.model"  # the scope key where the routes put the resolved model's name
_NO_MODEL = "none"  # a request refused before its model was known
_ENDPOINTS = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions",
              "/v1/embeddings": "embeddings"}  # fmt: skip
# Error codes (gateway/errors.py) that are a refusal to serve, by the reason ops graph.
_REJECTIONS = {"rate_limit_exceeded": "queue_full", "queue_timeout": "queue_timeout",
               "invalid_api_key": "auth", "forbidden": "auth", "shutting_down": "draining",
               "model_unavailable": "unavailable"}  # fmt: skip


def rejection_reason(code: str | None) -> str | None:
    """The `reason` label of a refused request's error code, or None if it is no refusal."""
    return _REJECTIONS.get(code or "")


class Metrics:
    """The families, in a registry of their own (not prometheus_client's global one)."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("llm_gateway_requests", "Requests answered, by model, endpoint "
                                "and status code", ["model", "endpoint", "status"],
                                registry=self.registry)  # fmt: skip
        self.duration = Histogram("llm_gateway_request_duration_seconds", "Time from a request's "
                                  "arrival to the end of its answer", ["model", "endpoint"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.rejected = Counter("llm_gateway_rejected_requests", "Requests refused, by reason: "
                                "queue_full, queue_timeout, auth, draining, unavailable",
                                ["model", "reason"], registry=self.registry)  # fmt: skip
        self.registry.register(_PoolCollector(gateway))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every answer of the OpenAI endpoints; passes anything else through."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            _ENDPOINTS.get(scope.get("path", "")) if scope["type"] == ScopeType.HTTP else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 499  # 499: the client left before an answer

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            model = scope.get(MODEL_KEY, _NO_MODEL)
            self.metrics.requests.labels(model, endpoint, str(status)).inc()
            self.metrics.duration.labels(model, endpoint).observe(time.perf_counter() - started)


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
            families["info"].add_metric([*labels, replica.device], 1)
        queued = GaugeMetricFamily("llm_gateway_queue_depth", "Requests waiting for a replica",
                                   labels=["model"])  # fmt: skip
        for model in registry.models():
            queued.add_metric([model], scheduler.queued(model))
        yield from (*families.values(), queued)


def _replica_families() -> dict[str, Any]:
    replica = ["model", "replica"]
    return {
        "state": GaugeMetricFamily("llm_gateway_replica_state", "1 for the state each replica "
                                   "is in, 0 for the others", labels=[*replica, "state"]),
        "in_flight": GaugeMetricFamily("llm_gateway_replica_in_flight", "Requests a replica "
                                       "is serving now", labels=replica),
        "served": CounterMetricFamily("llm_gateway_replica_requests", "Requests a replica has "
                                      "served", labels=replica),
        "restarts": CounterMetricFamily("llm_gateway_replica_restarts", "Times a replica's "
                                        "worker has exited and been started again",
                                        labels=replica),
        "info": GaugeMetricFamily("llm_gateway_replica_info", "Always 1: where each replica "
                                  "runs (device: its CUDA_VISIBLE_DEVICES, or cpu)",
                                  labels=[*replica, "device"]),
    }  # fmt: skip
