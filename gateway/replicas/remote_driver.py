"""The remote replica driver: an OpenAI-compatible server elsewhere, health-checked.

Nothing is started: the driver checks the server every `health.interval` seconds - its
`/health` (llama-server, vLLM, `llm-gateway worker`), or where that is missing (404), the
API's `/models` (Ollama and any OpenAI-compatible server) - and reports to the registry: ready
on the first passing check, out of rotation after `health.failures` failed checks in a row (or
at once after a request could not reach it: the scheduler's doing, as for local replicas), back
in after a passing one. Answers that fail in a row (500s from a server that passes its checks)
eject it for a while: gateway/replicas/outliers.py, for local replicas alike.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from ..config.file import ModelConfig
from .driver import Driver
from .registry import Replica

__all__ = ["RemoteDriver"]

log = logging.getLogger("gateway.supervisor")


class RemoteDriver(Driver):
    """Checks each remote replica; starts nothing."""

    kind = "remote"

    async def run(self, model: ModelConfig, replica: Replica) -> None:
        """Check `replica` until cancelled, moving it in and out of rotation."""
        failures = 0
        while True:
            reason = await self._check(replica)
            if reason is None:
                failures = 0
                self._registry.mark_answering(replica)
            else:
                failures += 1
                self._fail(replica, failures, reason)
            await asyncio.sleep(self.health.interval)

    async def stop(self, replicas: list[Replica], grace: float) -> None:
        """Nothing runs here for a remote replica: nothing to stop."""

    def _fail(self, replica: Replica, failures: int, reason: str) -> None:
        why = f"{failures} health checks failed in a row ({reason})"
        self._registry.note_unreachable(replica, why)
        if failures >= self.health.failures:
            self._registry.mark_unhealthy(replica, why)

    async def _check(self, replica: Replica) -> str | None:
        """None if the server answers its health check; otherwise what went wrong."""
        timeout = aiohttp.ClientTimeout(total=self.health.timeout)
        headers = {"Authorization": replica.auth} if replica.auth else {}
        try:
            for url in (replica.url + "/health", replica.api + "/models"):
                async with self._session.get(url, headers=headers, timeout=timeout) as resp:
                    if resp.status == 404:  # no such route there: try the next
                        continue
                    await resp.read()
                    return None if resp.status == 200 else f"{url} answered {resp.status}"
            return "neither /health nor /models is served"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"unreachable: {exc or type(exc).__name__}"
