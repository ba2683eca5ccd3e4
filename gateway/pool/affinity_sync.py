"""The affinity table shared by every gateway on one Redis: what one sends a remote replica,
the others learn, so a conversation goes back to the replica holding it whichever gateway its
next turn reaches.

Each gateway writes the blocks it recorded for remote replicas (their addresses mean the same
thing everywhere; a local worker's loopback address does not) to Redis, batched every FLUSH
seconds: into one sorted set per replica (block -> when, the newest BLOCKS_PER_REPLICA kept, for
a day), which a gateway that starts later loads, and on one channel, whose messages the others
record in their own tables as they come. Nothing on the request path waits for Redis; what is
lost while Redis is away costs only cache misses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence

import redis.asyncio as redis
from redis.exceptions import RedisError

from .affinity import BLOCKS_PER_REPLICA, PrefixTable

__all__ = ["AffinitySync"]

log = logging.getLogger("gateway")

CHANNEL = "llmgw:affinity"
_KEPT = "llmgw:affinity:"  # + a replica's api: its blocks, scored by when they were sent
_KEEP_SECONDS = 86400
FLUSH = 0.05  # seconds a record may wait to be published with others
_RETRY = 1.0  # seconds before subscribing again after Redis went away


class AffinitySync:
    """Publishes this gateway's records and applies the others' to `table`."""

    def __init__(self, url: str, table: PrefixTable) -> None:
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2.0)
        self._table = table
        self._me = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._pending: list[tuple[str, list[str]]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._publish())]

    def shared(self, api: str, hashes: Sequence[bytes]) -> None:
        """A remote replica at `api` was sent these blocks: tell the other gateways."""
        self._pending.append((api, [h.hex() for h in hashes]))

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(FLUSH)
            if not self._pending:
                continue
            batch, self._pending = self._pending, []
            with contextlib.suppress(RedisError, OSError):  # lost: a cache miss at worst
                await self._send(batch)

    async def _send(self, batch: list[tuple[str, list[str]]]) -> None:
        pipe, now = self._redis.pipeline(transaction=False), time.time()
        for api, hashes in batch:
            key = _KEPT + api
            pipe.zadd(key, {block: now + i * 1e-6 for i, block in enumerate(hashes)})
            pipe.zremrangebyrank(key, 0, -BLOCKS_PER_REPLICA - 1)
            pipe.expire(key, _KEEP_SECONDS)
        pipe.publish(CHANNEL, json.dumps({"from": self._me, "r": batch}))
        await pipe.execute()

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    await self._load()  # after subscribing: nothing falls between the two
                    async for message in pubsub.listen():
                        self._apply(message)
            except (RedisError, OSError) as exc:
                log.debug("affinity sync: Redis unreachable (%s); retrying", exc)
                await asyncio.sleep(_RETRY)

    async def _load(self) -> None:
        """What the gateways sent remote replicas before this one started, oldest first."""
        async for key in self._redis.scan_iter(match=_KEPT + "*", count=100):
            api = _text(key).removeprefix(_KEPT)
            blocks = await self._redis.zrange(key, 0, -1)
            self._table.record(api, [bytes.fromhex(_text(block)) for block in blocks])

    def _apply(self, message: dict[str, object]) -> None:
        if message.get("type") != "message" or not isinstance(message.get("data"), bytes):
            return
        sent = json.loads(message["data"])  # type: ignore[arg-type]
        if sent.get("from") == self._me:
            return
        for api, hashes in sent["r"]:
            self._table.record(api, [bytes.fromhex(h) for h in hashes])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
