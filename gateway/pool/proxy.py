"""The proxy: the one pooled aiohttp client that sends a request body to a replica, and releases
a replica whose answer was cut short once its worker says the request has ended. The client's side
of an answer (relaying it whole event by whole event) is gateway/http/relay.py."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import msgspec

from ..errors import UpstreamFailed, UpstreamTimeout
from .scheduler import Lease

__all__ = ["Proxy", "renamed"]

log = logging.getLogger("gateway.proxy")


class Proxy:
    """Owns the one pooled HTTP client to every replica."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._waits: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[None]] = set()  # the tasks relaying a stream now
        self._cut: set[asyncio.Task[None]] = set()  # those cut_streams is ending

    def relaying(self, task: asyncio.Task[None], now: bool) -> None:
        """A relay's task starts (`now`) or stops relaying a stream."""
        if now:
            self._streams.add(task)
        else:
            self._streams.discard(task)
            self._cut.discard(task)

    def was_cut(self, task: asyncio.Task[None]) -> bool:
        return task in self._cut

    async def cut_streams(self, wait: float) -> int:
        """End every stream being relayed with an error event, at once (a drain out of time:
        its client must see the cut, not a stream that just stops); wait up to `wait` s for
        those events to go out. Returns how many streams there were."""
        tasks = list(self._streams)
        self._cut.update(tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait)
        return len(tasks)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, url: str, auth: str, body: bytes, request_id: str, first_byte_timeout: float
    ) -> aiohttp.ClientResponse:
        """POST `body` to `url` with the worker's `auth`; return once the replica's status and
        headers arrive. A worker sends its headers with the first token (streams) or the whole
        answer."""
        assert self._session is not None, "Proxy.start() was not awaited"
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        if auth:  # a remote server may want none
            headers["Authorization"] = auth
        try:
            async with asyncio.timeout(first_byte_timeout):
                return await self._session.post(url, data=body, headers=headers)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"The model worker sent nothing within {first_byte_timeout:g} s."
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Its address and the library's words are for the log, not the client.
            log.warning("request %s: %s could not be reached: %r", request_id, url, exc)
            raise UpstreamFailed("The model worker could not be reached.") from exc

    def release_when_done(self, lease: Lease, request_id: str, timeout: float) -> None:
        """Release `lease` once its worker says the request has ended (at most `timeout` s).

        For a request whose answer was not read to its end (the client left, or a timeout):
        the worker may still be computing it (a template, a prompt evaluation: nothing stops
        those midway), and a replica shown free meanwhile would take the next request."""
        if not lease.replica.reports_ends:  # a remote server: no way to know; free it now
            lease.release()
            return
        wait = self._release_later(lease, request_id, timeout)
        task = asyncio.get_running_loop().create_task(wait)
        self._waits.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._waits.discard)

    async def _release_later(self, lease: Lease, request_id: str, timeout: float) -> None:
        assert self._session is not None, "Proxy.start() was not awaited"
        replica = lease.replica
        try:
            async with self._session.get(
                f"{replica.url}/requests/{request_id}/done",
                params={"timeout": str(timeout)},
                headers={"Authorization": replica.auth},
                timeout=aiohttp.ClientTimeout(total=timeout + 5),
            ) as response:
                await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # the worker is gone or hung: the supervisor deals with it
        finally:
            lease.release()


def renamed(body: bytes, model: str) -> bytes:
    """A request `body` (a JSON object, checked on arrival) naming `model` instead."""
    fields = msgspec.json.decode(body)
    fields["model"] = model
    return msgspec.json.encode(fields)
