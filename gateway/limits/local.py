"""Per-key limits: requests and tokens per minute as token buckets, and usage counts.

A bucket holds up to a minute's allowance and refills continuously (rpm/60 a second), so a key
may burst its whole minute and then goes on at its rate; `x-ratelimit-reset-*` is the time
until the bucket is full again. A request takes one request-token, and reserves what it may use
(`estimate_tokens`: the prompt's bytes / 4 plus max_tokens, or the model's context left) from
the tokens bucket as long as that bucket is not in debt; when it ends, the worker's real count
replaces the reservation (an error answer used nothing), so a key goes over its tpm by at most
the one request admitted while its bucket was positive.

The math is pure (`take`, `settle`, `Quota`); LocalLimits applies it in this process, and
gateway/limits/redis_store.py applies the same math in Redis for several gateways.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from workers.wire import MAX_CHOICES, Usage

from ..config.file import KeyConfig
from ..errors import RateLimited

__all__ = [
    "DEFAULT_COMPLETION_ESTIMATE",
    "Bucket",
    "Limits",
    "LocalLimits",
    "Quota",
    "Ticket",
    "UsageTable",
    "count_usage",
    "duration",
    "estimate_tokens",
    "refuse",
    "settle",
    "take",
    "usage_row",
    "utc_day",
]

DEFAULT_COMPLETION_ESTIMATE = 256  # tokens reserved for an answer when max_tokens is not given


def estimate_tokens(
    body_bytes: int, max_tokens: int | None, choices: Any = 1, context: int | None = None
) -> int:
    """What a request may use, before the worker counts it: a token is ~4 bytes of JSON, and
    each of its `choices` (n, when an integer; the worker refuses past MAX_CHOICES) an answer of
    up to max_tokens. With the model's `context` known (tokens a request may hold), never more
    than it can produce: the prompt at most the context, an answer at most the context left,
    and without max_tokens exactly that (what it may produce, settled to what it used)."""
    n = choices if isinstance(choices, int) and not isinstance(choices, bool) else 1
    n = min(max(n, 1), MAX_CHOICES)
    prompt = body_bytes // 4
    if context is None:
        return prompt + n * (DEFAULT_COMPLETION_ESTIMATE if max_tokens is None else max_tokens)
    prompt = min(prompt, context)
    left = context - prompt
    return prompt + n * (left if max_tokens is None else min(max_tokens, left))


@dataclass(frozen=True)
class Bucket:
    """A token bucket's level at `stamp` (seconds, the store's clock)."""

    level: float
    stamp: float

    def at(self, now: float, per_minute: int) -> float:
        """The level at `now`: refilled at per_minute/60 a second, up to per_minute."""
        return min(float(per_minute), self.level + max(0.0, now - self.stamp) * per_minute / 60)


def take(bucket: Bucket | None, now: float, per_minute: int, amount: int) -> tuple[Bucket, float]:
    """Take `amount` if the bucket holds at least one unit (it may go into debt for the rest);
    return the new bucket and 0, or the unchanged bucket (refilled to now) and the seconds until
    it holds one unit."""
    level = float(per_minute) if bucket is None else bucket.at(now, per_minute)
    if level >= 1:
        return Bucket(level - amount, now), 0.0
    return Bucket(level, now), (1 - level) * 60 / per_minute


def settle(bucket: Bucket, now: float, per_minute: int, returned: int) -> Bucket:
    """Give back `returned` units (negative: take more), e.g. a reservation less the real use."""
    return Bucket(min(float(per_minute), bucket.at(now, per_minute) + returned), now)


def duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1s", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


@dataclass(frozen=True)
class Quota:
    """A limited key's standing after a check, as OpenAI's x-ratelimit-* headers say it."""

    rpm: int | None = None
    requests: float = 0.0  # the request bucket's level
    tpm: int | None = None
    tokens: float = 0.0

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.rpm is not None:
            headers |= _trio("requests", self.rpm, self.requests)
        if self.tpm is not None:
            headers |= _trio("tokens", self.tpm, self.tokens)
        return headers


def _trio(what: str, limit: int, level: float) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{what}": str(limit),
        f"x-ratelimit-remaining-{what}": str(max(0, math.floor(level))),
        f"x-ratelimit-reset-{what}": duration(max(0.0, limit - level) * 60 / limit),
    }


@dataclass
class Ticket:
    """One admitted request: what it reserved, its concurrency slot, its quota for headers."""

    key: KeyConfig
    request_id: str
    model: str
    reserved: int
    quota: Quota
    slot: bool = False  # holds a concurrency slot in the store (Redis only)


def utc_day(seconds: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def refuse(key: KeyConfig, what: str, wait: float, quota: Quota) -> RateLimited:
    """The 429 for `key` over its `what`, with Retry-After and the x-ratelimit-* headers."""
    return RateLimited(
        f"Rate limit reached for key '{key.name}': {what}. Try again in {duration(wait)}.",
        retry_after=max(1, math.ceil(wait)),
        headers=quota.headers(),
    )


class Limits(Protocol):
    """Where the limits' state lives: this process (LocalLimits) or Redis (RedisLimits)."""

    async def admit(
        self,
        key: KeyConfig,
        request_id: str,
        model: str,
        reserve: int,
        running: int,
        with_slot: bool = False,
    ) -> Ticket:
        """A Ticket for a request within the key's limits; raise RateLimited (429) else.
        `running`: the key's requests holding a replica here; `with_slot`: this one has a
        replica already, so take its concurrency slot now."""

    async def start(self, ticket: Ticket) -> None:
        """The request got a replica: take its concurrency slot; RateLimited if none is left."""

    def finish(self, ticket: Ticket, usage: Usage | None) -> None:
        """The request ended having used `usage` (None: unknown); settle and count it."""

    async def usage(self) -> list[dict[str, Any]]:
        """Requests and tokens by day, key and model."""

    async def reset(self, key: KeyConfig) -> None:
        """Refill the key's request and token buckets (an admin's remedy for a locked key);
        its requests in flight keep their concurrency slots, its usage stays counted."""

    async def close(self) -> None:
        """Let go of any connection."""


class LocalLimits:
    """The buckets and usage of this process: one gateway's limits (no redis.url)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, Bucket] = {}
        self._tokens: dict[str, Bucket] = {}
        # (day, key, model) -> [requests, prompt tokens, completion tokens]
        self._usage: UsageTable = {}

    async def admit(
        self,
        key: KeyConfig,
        request_id: str,
        model: str,
        reserve: int,
        running: int,
        with_slot: bool = False,
    ) -> Ticket:
        """Check rpm, tpm and max_concurrent (`running`: the key's requests in flight here;
        the scheduler's count is the slot, so `with_slot` changes nothing here)."""
        if not key.limited:  # most requests: nothing to check, no quota to report
            return Ticket(key, request_id, model, reserve, _UNLIMITED)
        if key.max_concurrent is not None and running >= key.max_concurrent:
            raise refuse(
                key, f"{key.max_concurrent} requests in flight at once", 1.0, self._quota(key)
            )
        return self._check(key, request_id, model, reserve)

    def _check(self, key: KeyConfig, request_id: str, model: str, reserve: int) -> Ticket:
        now, name = self._clock(), key.name
        requests = tokens = None
        wait = 0.0
        if key.rpm is not None:
            requests, wait = take(self._requests.get(name), now, key.rpm, 1)
        if key.tpm is not None and not wait:
            tokens, wait = take(self._tokens.get(name), now, key.tpm, reserve)
        if wait:
            over = "requests per minute" if tokens is None else "tokens per minute"
            raise refuse(key, f"{over}", wait, self._quota(key))
        if requests is not None:
            self._requests[name] = requests
        if tokens is not None:
            self._tokens[name] = tokens
        return Ticket(key, request_id, model, reserve, self._quota(key))

    def _quota(self, key: KeyConfig) -> Quota:
        now = self._clock()
        requests, tokens = self._requests.get(key.name), self._tokens.get(key.name)
        return Quota(
            rpm=key.rpm,
            requests=_level(requests, now, key.rpm),
            tpm=key.tpm,
            tokens=_level(tokens, now, key.tpm),
        )

    async def start(self, ticket: Ticket) -> None:
        """Nothing to take here: the scheduler counts this process's requests in flight."""

    def finish(self, ticket: Ticket, usage: Usage | None) -> None:
        """Replace the reservation with the real count (None: unknown, the reservation stays);
        add the request to the usage."""
        key, used = ticket.key, _total(usage, ticket.reserved)
        bucket = self._tokens.get(key.name)
        if key.tpm is not None and bucket is not None:
            self._tokens[key.name] = settle(bucket, self._clock(), key.tpm, ticket.reserved - used)
        count_usage(self._usage, ticket, usage)

    async def reset(self, key: KeyConfig) -> None:
        self._requests.pop(key.name, None)
        self._tokens.pop(key.name, None)

    def now(self) -> float:
        return self._clock()

    def seed(self, key: KeyConfig, quota: Quota, stamp: float) -> None:
        """Start the key's buckets where another store last had them (`quota`, at `stamp` on
        this clock), unless they are here already: RedisLimits' fallback in an outage goes on
        from the shared levels rather than from full buckets."""
        if key.rpm is not None and key.name not in self._requests:
            self._requests[key.name] = Bucket(quota.requests, stamp)
        if key.tpm is not None and key.name not in self._tokens:
            self._tokens[key.name] = Bucket(quota.tokens, stamp)

    def forget(self) -> None:
        """Drop every bucket (Redis is back: the next outage starts from its levels again)."""
        self._requests.clear()
        self._tokens.clear()

    async def usage(self) -> list[dict[str, Any]]:
        return [
            usage_row(day, key, model, *counts)
            for (day, key, model), counts in sorted(self._usage.items())
        ]

    async def close(self) -> None:
        pass


_UNLIMITED = Quota()

# Requests and prompt / completion tokens, by (day, key name, model).
UsageTable = dict[tuple[str, str, str], list[int]]


def count_usage(table: UsageTable, ticket: Ticket, usage: Usage | None) -> None:
    """Add one ended request (and the tokens it used, if known) to `table`."""
    counts = table.setdefault((utc_day(time.time()), ticket.key.name, ticket.model), [0, 0, 0])
    counts[0] += 1
    if usage is not None:
        counts[1] += usage.prompt_tokens
        counts[2] += usage.completion_tokens


def usage_row(
    day: str, key: str, model: str, requests: int, prompt: int, completion: int
) -> dict[str, Any]:
    return {
        "day": day,
        "key": key,
        "model": model,
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


def _level(bucket: Bucket | None, now: float, per_minute: int | None) -> float:
    if per_minute is None:
        return 0.0
    return float(per_minute) if bucket is None else bucket.at(now, per_minute)


def _total(usage: Usage | None, reserved: int) -> int:
    """The tokens a request used; its reservation when the worker reported none (cut short)."""
    return reserved if usage is None else usage.prompt_tokens + usage.completion_tokens
