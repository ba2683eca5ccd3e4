"""The stand-in stack of scenarios 1, 2, 3, 6 and 7: gateway, its workers, LiteLLM, pinned."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .common import pin_self
from .peers import litellm_available, start_litellm
from .procs import Proc, gateway_workers, pin, rss_kib, start_gateway

__all__ = ["GATEWAY_CPU", "LOADGEN_CPU", "PINNING", "Stack", "standin_stack"]

GATEWAY_CPU, LOADGEN_CPU = 0, 1
PINNING = (
    "gateway (and LiteLLM) on core 0 (taskset -c 0); load generator and stand-in workers "
    "on core 1 (the workers re-pinned with sched_setaffinity once ready)"
)


@dataclass
class Stack:
    """A gateway over stand-in workers; `urls` maps each target name to its base URLs."""

    gateway: Proc
    workers: list[dict[str, Any]]
    litellm: Proc | None = None
    idle_rss_kib: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def worker_urls(self) -> list[str]:
        return [str(w["url"]) for w in self.workers]

    def urls(self) -> dict[str, list[str]]:
        urls = {"direct": self.worker_urls, "gateway": [self.gateway.url]}
        if self.litellm is not None:
            urls["litellm"] = [self.litellm.url]
        return urls

    def worker_rss_kib(self) -> list[int]:
        return [rss_kib(int(w["pid"])) for w in self.workers]


@contextlib.contextmanager
def standin_stack(name: str, standin: dict[str, Any], replicas: int, peer: bool) -> Iterator[Stack]:
    """Start the gateway on core 0 and its stand-in workers on core 1 (plus LiteLLM if `peer`)."""
    model = {
        "name": "mock",
        "engine": "standin",
        "replicas": replicas,
        "standin": standin,
        "max_queue": 100_000,
        "queue_timeout": 120,
    }
    gateway = start_gateway(name, [model], cpus=str(GATEWAY_CPU), timeout=300)
    litellm: Proc | None = None
    try:
        workers = gateway_workers(gateway)
        for worker in workers:
            pin(int(worker["pid"]), {LOADGEN_CPU})
        pin_self({LOADGEN_CPU})
        stack = Stack(gateway, workers, idle_rss_kib=rss_kib(gateway.pid))
        if peer and litellm_available():
            litellm = start_litellm(f"{name}-litellm", stack.worker_urls, cpus=str(GATEWAY_CPU))
            stack.litellm = litellm
        elif peer:
            stack.notes.append("LiteLLM not set up (bench/setup_litellm.sh): peer columns left out")
        yield stack
    finally:
        if litellm is not None:
            litellm.stop()
        gateway.stop()
