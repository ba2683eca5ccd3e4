"""Which gateways are alive: each one's heartbeat in Redis, for `/admin/gateways`.

Several gateways on one config and one Redis act as one (their limits are shared there); this
lets an operator see them. Every HEARTBEAT seconds a gateway writes a small JSON of itself under
`llmgw:gateway:ID` with a TTL of three heartbeats, so one that died leaves the list within
TTL seconds; one that stops cleanly deletes its key. Without Redis the list is this gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from .. import __version__

__all__ = ["HEARTBEAT", "Gateways"]

log = logging.getLogger("gateway")

HEARTBEAT = 5.0  # seconds between two heartbeats
_TTL = 3 * HEARTBEAT
_PREFIX = "llmgw:gateway:"

Facts = Callable[[], dict[str, Any]]  # what changes: replicas ready, requests in flight


class Gateways:
    """This gateway's heartbeat and the list of those alive."""

    def __init__(self, redis_url: str | None, port: int, facts: Facts) -> None:
        host = socket.gethostname()
        self.id = f"{host}:{os.getpid()}:{port}"
        self._fixed = {
            "id": self.id,
            "host": host,
            "pid": os.getpid(),
            "port": port,
            "version": __version__,
            "started_at": time.time(),
        }
        self._facts = facts
        self._redis = (
            None
            if redis_url is None
            else redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        )
        self._beating: asyncio.Task[None] | None = None

    def me(self) -> dict[str, Any]:
        return {**self._fixed, **self._facts(), "last_seen": time.time()}

    async def start(self) -> None:
        if self._redis is not None:
            self._beating = asyncio.create_task(self._beat())

    async def alive(self) -> list[dict[str, Any]]:
        """Every gateway whose heartbeat has not expired, this one first and fresh."""
        if self._redis is None:
            return [self.me()]
        try:
            others = await self._others()
        except (RedisError, OSError) as exc:
            return [{**self.me(), "error": f"Redis unreachable: {exc}"}]
        return [self.me(), *sorted(others, key=lambda g: str(g["id"]))]

    async def _others(self) -> list[dict[str, Any]]:
        assert self._redis is not None
        keys = [key async for key in self._redis.scan_iter(match=_PREFIX + "*", count=100)]
        values = await self._redis.mget(keys) if keys else []
        found = [json.loads(value) for value in values if value is not None]
        return [entry for entry in found if entry.get("id") != self.id]

    async def _beat(self) -> None:
        assert self._redis is not None
        while True:
            with contextlib.suppress(RedisError, OSError):  # the limits log Redis's absence
                await self._redis.set(_PREFIX + self.id, json.dumps(self.me()), ex=int(_TTL))
            await asyncio.sleep(HEARTBEAT)

    async def close(self) -> None:
        """Stop beating and leave the list at once."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(_PREFIX + self.id)
            await self._redis.aclose()
