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
HEALTH = {"interval": 2.0, "timeout": 10.0, "failures": 3}
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
    bare: Proc | None = None  # a second gateway with metrics and the request log off
    capacity: int = 1
    idle_rss_kib: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def worker_urls(self) -> list[str]:
        return [str(w["url"]) for w in self.workers]

    def urls(self, with_bare: bool = False) -> dict[str, list[str]]:
        urls = {"direct": self.worker_urls, "gateway": [self.gateway.url]}
        if with_bare and self.bare is not None:
            urls["gateway-bare"] = [self.bare.url]
        if self.litellm is not None:
            urls["litellm"] = [self.litellm.url]
        return urls

    def describe(self) -> str:
        n = len(self.workers)
        return (
            f"{n} stand-in replica{'s' if n > 1 else ''} of capacity {self.capacity} "
            f"(--concurrency {self.capacity}); direct = "
            f"{'its' if n == 1 else 'their'} own URL{'s' if n > 1 else ''} from /admin/workers, "
            "so direct, the gateway and LiteLLM target the same worker process"
            f"{'es' if n > 1 else ''}"
        )

    def worker_rss_kib(self) -> list[int]:
        return [rss_kib(int(w["pid"])) for w in self.workers]


@contextlib.contextmanager
def standin_stack(
    name: str,
    standin: dict[str, Any],
    replicas: int,
    peer: bool,
    capacity: int = 1,
    bare: bool = False,
) -> Iterator[Stack]:
    """Start the gateway on core 0 and its stand-in workers on core 1 (plus LiteLLM if `peer`).

    `capacity` is the requests one replica serves at once (`--concurrency`: one engine thread per
    slot); direct, the gateway and LiteLLM all target the same worker processes. `bare` adds
    a gateway with metrics and the request log off, on the gateway's core, over its own workers.
    """
    model = {
        "name": "mock",
        "engine": "standin",
        "replicas": replicas,
        "capacity": capacity,
        "standin": standin,
        "max_queue": 100_000,
        "queue_timeout": 120,
    }
    # One replica carries every stream: at 500 streams on a loaded machine its /status answer
    # took over 2 s three times in a row and the supervisor killed it (direct then hit a dead
    # port), so the stand-in stack gives the health check more room than the default.
    gateway = start_gateway(
        name, [model], cpus=str(GATEWAY_CPU), timeout=300, extra={"health": HEALTH}
    )
    litellm: Proc | None = None
    stack: Stack | None = None
    try:
        workers = gateway_workers(gateway)
        for worker in workers:
            pin(int(worker["pid"]), {LOADGEN_CPU})
        pin_self({LOADGEN_CPU})
        stack = Stack(gateway, workers, capacity=capacity, idle_rss_kib=rss_kib(gateway.pid))
        if bare:
            stack.bare = _start_bare(name, model)
        if peer and litellm_available():
            litellm = start_litellm(f"{name}-litellm", stack.worker_urls, cpus=str(GATEWAY_CPU))
            stack.litellm = litellm
        elif peer:
            stack.notes.append("LiteLLM not set up (bench/setup_litellm.sh): peer columns left out")
        yield stack
    finally:
        if litellm is not None:
            litellm.stop()
        if stack is not None and stack.bare is not None:
            stack.bare.stop()
        gateway.stop()


def _start_bare(name: str, model: dict[str, Any]) -> Proc:
    """The same gateway with metrics and the request log off, its workers on core 1 too."""
    bare = start_gateway(
        f"{name}-bare",
        [model],
        cpus=str(GATEWAY_CPU),
        timeout=300,
        extra={"health": HEALTH},
        recorded=False,
    )
    for worker in gateway_workers(bare):
        pin(int(worker["pid"]), {LOADGEN_CPU})
    return bare
