"""Per-key limits in Redis, so several gateways enforce one limit together.

The same token-bucket math as gateway/limits/local.py, run as Lua scripts on Redis's clock: one
atomic script, one round trip, per check; a request that gets a replica at once takes its
concurrency slot in that same script. Every key Redis holds has a TTL. A slot is a lease (a
sorted-set member scored by its expiry) that this gateway renews while the request runs, so the
slots of a gateway that died come back within `redis.lease_seconds`. What a request owes when it
ends (its slot, the tokens its estimate was off by) rides with the key's next check, or is sent
within _SETTLE_EVERY if none comes: no round trip of its own on a busy key. Usage is added up
here and written once a second (one hash a day): a gateway that dies loses at most a second of
counts. Keys with no limits cost no round trip at all.

Redis unreachable: `on_error: allow` checks the limits in this process meanwhile (and logs it
once per outage), each key's buckets starting where Redis last had them, so a spent key stays
spent and refills at its rate (every gateway does so on its own: N gateways admit up to N times
the rate during an outage); `deny` answers 503; each request after a second's pause tries Redis
again. A Redis that comes back empty (restarted, nothing persisted) holds full buckets.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError

from workers.wire import Usage

from ..config.file import KeyConfig, RedisConfig
from ..errors import Unavailable
from .local import (
    LocalLimits,
    Quota,
    Ticket,
    UsageTable,
    count_usage,
    refuse,
    usage_row,
)

__all__ = ["RedisLimits"]

log = logging.getLogger("gateway.limits")
T = TypeVar("T")

_PREFIX = "llmgw:"
_USAGE_DAYS = 40  # how long a day's usage is kept
_RETRY_AFTER_ERROR = 1.0  # seconds without trying Redis after it failed
_FLUSH_EVERY = 1.0  # seconds between two writes of the usage counts
_SETTLE_EVERY = 0.05  # seconds a finished request's slot and tokens may wait for a ride
_FIELDS = ("requests", "prompt_tokens", "completion_tokens")

# KEYS: request bucket, token bucket, slots. ARGV: rpm, tpm, max_concurrent (0: none), reserve,
# the slot's member ("": take none now), lease seconds, tokens owed back by ended requests, then
# the slots they give back. Returns {refused: "" | "rpm" | "tpm" | "concurrent", wait seconds,
# request level, token level}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, most, reserve = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local member, lease, back = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
for i = 8, #ARGV do redis.call('ZREM', KEYS[3], ARGV[i]) end
local function level(key, per_minute)
  local v = redis.call('HMGET', key, 'level', 'stamp')
  if not v[1] then return per_minute end
  return math.min(per_minute, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * per_minute / 60)
end
local function store(key, value, per_minute)
  redis.call('HSET', key, 'level', tostring(value), 'stamp', tostring(now))
  redis.call('EXPIRE', key, math.ceil((per_minute - value) * 60 / per_minute) + 1)
end
local refused, wait, requests, tokens = '', 0, 0, 0
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= most then refused, wait = 'concurrent', 1 end
end
if rpm > 0 then
  requests = level(KEYS[1], rpm)
  if refused == '' and requests < 1 then refused, wait = 'rpm', (1 - requests) * 60 / rpm end
end
if tpm > 0 then
  tokens = math.min(tpm, level(KEYS[2], tpm) + back)
  if refused == '' and tokens < 1 then refused, wait = 'tpm', (1 - tokens) * 60 / tpm end
  if refused ~= '' and back ~= 0 then store(KEYS[2], tokens, tpm) end
end
if refused == '' then
  if rpm > 0 then requests = requests - 1; store(KEYS[1], requests, rpm) end
  if tpm > 0 then tokens = tokens - reserve; store(KEYS[2], tokens, tpm) end
  if most > 0 and member ~= '' then
    redis.call('ZADD', KEYS[3], now + lease, member)
    redis.call('EXPIRE', KEYS[3], math.ceil(lease) + 1)
  end
end
return {refused, tostring(wait), tostring(requests), tostring(tokens)}
"""

# KEYS: slots. ARGV: max_concurrent, member, lease seconds. Returns 1 if the slot was taken.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""

# KEYS: slots. ARGV: lease seconds, members... Pushes each held slot's expiry forward.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 1)
return 0
"""

# KEYS: token bucket, slots. ARGV: tpm (0: none), tokens given back (negative: taken), then the
# slots given back. Settles ended requests' tokens and frees their slots.
_FINISH = """
for i = 3, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
local per_minute, back = tonumber(ARGV[1]), tonumber(ARGV[2])
if per_minute == 0 or back == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'level', 'stamp')
local level = per_minute
if v[1] then
  level = math.min(per_minute, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * per_minute / 60)
end
level = math.min(per_minute, level + back)
redis.call('HSET', KEYS[1], 'level', tostring(level), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((per_minute - level) * 60 / per_minute) + 1)
return 0
"""


@dataclass
class _Owed:
    """What ended requests of one key give back: tokens (reserved less used) and slots."""

    tokens: int = 0
    slots: list[str] = field(default_factory=list)
    tpm: int = 0  # the key's tpm, to settle the tokens against (0: none)


def _soon(
    pending: asyncio.Task[None] | None, delay: float, work: Callable[[], Awaitable[None]]
) -> asyncio.Task[None]:
    """`pending` if it has yet to run; else a task running `work` in `delay` seconds."""
    if pending is not None and not pending.done():
        return pending

    async def later() -> None:
        await asyncio.sleep(delay)
        await work()

    return asyncio.get_running_loop().create_task(later())


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()


def _keys(name: str) -> list[str]:
    """A key's request bucket, token bucket and slots (one hash tag: one cluster slot)."""
    return [f"{_PREFIX}{{{name}}}:rpm", f"{_PREFIX}{{{name}}}:tpm", f"{_PREFIX}{{{name}}}:slots"]


class RedisLimits:
    """Limits and usage shared by every gateway on one Redis."""

    def __init__(self, config: RedisConfig, fallback: LocalLimits | None = None) -> None:
        assert config.url is not None
        self._config = config
        self._redis = redis.Redis.from_url(
            config.url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._admit = self._redis.register_script(_ADMIT)
        self._take_slot = self._redis.register_script(_TAKE_SLOT)
        self._renew = self._redis.register_script(_RENEW)
        self._finish_script = self._redis.register_script(_FINISH)
        self._fallback = fallback or LocalLimits()
        self._local: set[int] = set()  # tickets admitted by the fallback (ids)
        self._slots: dict[str, set[str]] = {}  # held slot members by key name
        self._member = f"{os.uname().nodename}:{os.getpid()}:"
        self._down_until = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._usage: UsageTable = {}  # not yet written to Redis
        self._flusher: asyncio.Task[None] | None = None
        self._owed: dict[str, _Owed] = {}  # by key name: what ended requests give back
        # slots a settle is sending now, by key name: a check meanwhile frees them too, since
        # it may reach Redis first (ZREM of a request's own member is safe to repeat)
        self._settling: dict[str, list[str]] = {}
        self._settler: asyncio.Task[None] | None = None
        # Each limited key's levels at its latest check (and when, on the fallback's clock):
        # where the fallback starts in an outage.
        self._seen: dict[str, tuple[Quota, float]] = {}

    async def admit(
        self,
        key: KeyConfig,
        request_id: str,
        model: str,
        reserve: int,
        running: int,
        with_slot: bool = False,
    ) -> Ticket:
        if not key.limited:
            return Ticket(key, request_id, model, reserve, Quota())
        slot = with_slot and key.max_concurrent is not None
        member = self._member + request_id if slot else ""
        owed = self._owed.pop(key.name, None) or _Owed()
        freed = owed.slots + self._settling.get(key.name, [])
        args: list[int | float | str] = [
            key.rpm or 0,
            key.tpm or 0,
            key.max_concurrent or 0,
            reserve,
            member,
            self._config.lease_seconds,
            owed.tokens,
            *freed,
        ]
        try:
            answer = await self._call(lambda: self._admit(keys=_keys(key.name), args=args))
        except BaseException:
            self._owe(key.name, owed)
            raise
        if answer is None:  # Redis unreachable, on_error: allow
            self._owe(key.name, owed)
            if (seen := self._seen.get(key.name)) is not None:
                self._fallback.seed(key, *seen)
            ticket = await self._fallback.admit(key, request_id, model, reserve, running)
            self._local.add(id(ticket))
            return ticket
        refused, wait, requests, tokens = (item.decode() for item in answer)
        quota = Quota(key.rpm, float(requests), key.tpm, float(tokens))
        self._seen[key.name] = quota, self._fallback.now()
        if refused:
            raise refuse(key, _WHAT[refused](key), float(wait), quota)
        ticket = Ticket(key, request_id, model, reserve, quota)
        if slot:
            self._hold(ticket, member)
        return ticket

    def _hold(self, ticket: Ticket, member: str) -> None:
        ticket.slot = True
        self._slots.setdefault(ticket.key.name, set()).add(member)
        self._ensure_renewer()

    async def start(self, ticket: Ticket) -> None:
        key, most = ticket.key, ticket.key.max_concurrent
        if most is None or ticket.slot or id(ticket) in self._local:
            return
        member = self._member + ticket.request_id
        args: list[int | float | str] = [most, member, self._config.lease_seconds]
        taken = await self._call(lambda: self._take_slot(keys=_keys(key.name)[2:], args=args))
        if taken is None:
            return  # Redis went away meanwhile (allow): this process's count holds
        if not taken:  # another gateway took the key's last slot while this one queued
            raise refuse(key, _WHAT["concurrent"](key), 1.0, ticket.quota)
        self._hold(ticket, member)

    def finish(self, ticket: Ticket, usage: Usage | None) -> None:
        if id(ticket) in self._local:
            self._local.discard(id(ticket))
            self._fallback.finish(ticket, usage)
            return
        self._count(ticket, usage)
        key = ticket.key
        used = ticket.reserved if usage is None else usage.prompt_tokens + usage.completion_tokens
        owed = _Owed(ticket.reserved - used if key.tpm is not None else 0, tpm=key.tpm or 0)
        if ticket.slot:
            owed.slots.append(self._member + ticket.request_id)
            self._slots[key.name].discard(owed.slots[0])
        if owed.tokens or owed.slots:
            self._owe(key.name, owed)

    def _owe(self, name: str, owed: _Owed) -> None:
        """Keep what `name`'s ended requests give back for its next check, or the settler."""
        if not (owed.tokens or owed.slots):
            return
        kept = self._owed.setdefault(name, _Owed())
        kept.tokens += owed.tokens
        kept.slots += owed.slots
        kept.tpm = owed.tpm or kept.tpm
        self._settler = _soon(self._settler, _SETTLE_EVERY, self._settle)

    async def _settle(self) -> None:
        """Send what no check took along, every key in one pipeline."""
        owed, self._owed = self._owed, {}
        if not owed:
            return
        self._settling = {name: debt.slots for name, debt in owed.items() if debt.slots}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name, debt in owed.items():
                await self._finish_script(
                    keys=_keys(name)[1:], client=pipe, args=[debt.tpm, debt.tokens, *debt.slots]
                )
            sent = await self._call(pipe.execute, quiet=True)
        finally:
            self._settling = {}
        if sent is None:
            for name, debt in owed.items():  # Redis is away: kept for later
                self._owe(name, debt)

    def _count(self, ticket: Ticket, usage: Usage | None) -> None:
        """Add the request to the usage written at the next flush."""
        count_usage(self._usage, ticket, usage)
        self._flusher = _soon(self._flusher, _FLUSH_EVERY, self._flush)

    async def _flush(self) -> None:
        """Write the counts added up since the last flush; keep them if Redis is away."""
        pending, self._usage = self._usage, {}
        if not pending:
            return
        pipe = self._redis.pipeline(transaction=False)
        for (day, key, model), counts in pending.items():
            name, field = f"{_PREFIX}usage:{day}", f"{key}\n{model}\n"
            for what, count in zip(_FIELDS, counts, strict=True):
                if count:
                    pipe.hincrby(name, field + what, count)
            pipe.expire(name, _USAGE_DAYS * 86400)
        if await self._call(pipe.execute, quiet=True) is None:
            for entry, counts in pending.items():  # not lost: tried again at the next flush
                kept = self._usage.setdefault(entry, [0, 0, 0])
                kept[:] = [a + b for a, b in zip(kept, counts, strict=True)]

    async def reset(self, key: KeyConfig) -> None:
        """Every gateway's buckets of the key: gone from Redis, full again (and this one's
        fallback). Tokens its ended requests still owe back are dropped with them (the slots
        they free are not)."""
        if (owed := self._owed.get(key.name)) is not None:
            owed.tokens = 0
        await self._fallback.reset(key)
        rpm, tpm, _ = _keys(key.name)
        await self._call(lambda: self._redis.delete(rpm, tpm))

    async def usage(self) -> list[dict[str, Any]]:
        await self._flush()  # this gateway's latest counts first
        rows = await self._call(self._read_usage, quiet=True)
        if rows is None:
            return await self._fallback.usage()
        return rows

    async def _read_usage(self) -> list[dict[str, Any]]:
        counts: dict[tuple[str, str, str], dict[str, int]] = {}
        async for name in self._redis.scan_iter(match=f"{_PREFIX}usage:*", count=100):
            day = _text(name).removeprefix(f"{_PREFIX}usage:")
            for entry, value in (await self._redis.hgetall(name)).items():
                key, model, what = _text(entry).split("\n")
                counts.setdefault((day, key, model), dict.fromkeys(_FIELDS, 0))[what] = int(value)
        return [
            usage_row(day, key, model, *(c[f] for f in _FIELDS))
            for (day, key, model), c in sorted(counts.items())
        ]

    async def close(self) -> None:
        for task in (self._renewer, self._flusher, self._settler):
            if task is not None:
                task.cancel()
        await self._settle()
        await self._flush()
        await self._redis.aclose()

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_slots())

    async def _renew_slots(self) -> None:
        """While slots are held, push their expiry forward every third of a lease."""
        lease = self._config.lease_seconds
        while any(self._slots.values()):
            await asyncio.sleep(lease / 3)
            for name, members in list(self._slots.items()):
                if members:
                    await self._call(self._renewal(name, [lease, *members]), quiet=True)

    def _renewal(self, name: str, args: list[Any]) -> Callable[[], Awaitable[Any]]:
        return lambda: self._renew(keys=_keys(name)[2:], args=args)

    async def _call(self, command: Callable[[], Awaitable[T]], quiet: bool = False) -> T | None:
        """Run a Redis command; on failure: None (allow, or `quiet`: after the answer) or a
        503 (deny)."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._down_until:
            try:
                result = await command()
            except (RedisError, OSError) as exc:
                self._went_down(loop.time(), exc)
            else:
                if self._down_until:
                    log.warning("Redis is back: limits are shared again")
                    self._down_until = 0.0
                    self._fallback.forget()
                return result
        if self._config.on_error == "deny" and not quiet:
            raise Unavailable(
                "The limits store (Redis) is unreachable; try again shortly.",
                retry_after=1,
                code="limits_unavailable",
            )
        return None

    def _went_down(self, now: float, exc: Exception) -> None:
        if not self._down_until:
            how = (
                "checking limits in this process"
                if self._config.on_error == "allow"
                else ("refusing limited requests")
            )
            log.warning("Redis unreachable (%s): %s until it is back", exc, how)
        self._down_until = now + _RETRY_AFTER_ERROR


_WHAT: dict[str, Callable[[KeyConfig], str]] = {
    "rpm": lambda key: "requests per minute",
    "tpm": lambda key: "tokens per minute",
    "concurrent": lambda key: f"{key.max_concurrent} requests in flight at once",
}
