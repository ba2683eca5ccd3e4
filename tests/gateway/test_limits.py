"""Per-key limits: token-bucket math, OpenAI's headers, and the in-process store."""

from __future__ import annotations

import pytest

from gateway.config.file import KeyConfig
from gateway.errors import RateLimited
from gateway.limits.local import (
    Bucket,
    LocalLimits,
    Quota,
    duration,
    estimate_tokens,
    settle,
    take,
)
from workers.wire import Usage


def test_a_new_bucket_holds_a_minute_and_refills_at_the_rate() -> None:
    bucket, wait = take(None, 0.0, 60, 1)
    assert (bucket.level, wait) == (59.0, 0.0)
    assert bucket.at(30.0, 60) == 60.0  # refilled, capped at the minute's allowance
    assert Bucket(0.0, 0.0).at(1.0, 60) == 1.0  # one a second


def test_an_empty_bucket_says_how_long_until_it_holds_one() -> None:
    bucket, wait = take(Bucket(0.25, 0.0), 0.0, 60, 1)
    assert bucket.level == 0.25 and wait == pytest.approx(0.75)


def test_a_reservation_may_run_into_debt_then_settles_to_the_real_use() -> None:
    bucket, wait = take(Bucket(100.0, 0.0), 0.0, 1000, 400)  # 100 left: still admitted
    assert bucket.level == -300 and wait == 0
    assert take(bucket, 0.0, 1000, 1)[1] > 0  # in debt: the next one waits
    assert settle(bucket, 0.0, 1000, 400 - 50).level == 50  # it used 50, not 400


def test_durations_read_as_openai_writes_them() -> None:
    assert [duration(s) for s in (0.02, 1.0, 1.5, 59.9991, 360.0, 61.2)] == [
        "20ms",
        "1s",
        "1.5s",
        "60s",
        "6m0s",
        "1m2s",
    ]


def test_quota_headers_name_limit_remaining_and_reset() -> None:
    headers = Quota(rpm=60, requests=59.5, tpm=1000, tokens=-20).headers()
    assert headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "500ms",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m2s",
    }
    assert Quota().headers() == {}  # an unlimited key sends none


def test_the_estimate_is_the_prompt_s_bytes_over_four_plus_the_answer_s_limit() -> None:
    assert estimate_tokens(400, 50) == 150 and estimate_tokens(400, None) == 356
    assert estimate_tokens(400, 50, 3) == 250  # n answers
    assert estimate_tokens(400, 50, "3") == estimate_tokens(400, 50, True) == 150  # not an n


def test_with_the_context_known_a_reservation_is_what_the_model_can_produce() -> None:
    assert estimate_tokens(400, 10**9, context=2048) == 2048  # not a billion: the context
    assert estimate_tokens(400, None, context=2048) == 2048  # no max_tokens: the context left
    assert estimate_tokens(400, 50, context=2048) == 150  # within it: as asked
    assert estimate_tokens(4 << 20, 50, context=2048) == 2048  # a prompt over it: no answer
    assert estimate_tokens(400, None, 2, context=2048) == 100 + 2 * 1948  # n answers, one prompt


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_rpm_refuses_with_retry_after_and_headers_then_recovers() -> None:
    clock = Clock()
    limits, key = LocalLimits(clock), KeyConfig("k", b"k", rpm=2)
    for _ in range(2):
        await limits.admit(key, "r", "m", 10, running=0)
    with pytest.raises(RateLimited) as refused:
        await limits.admit(key, "r", "m", 10, running=0)
    headers = refused.value.headers()
    assert headers["Retry-After"] == "30" and headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per minute" in refused.value.message and "'k'" in refused.value.message
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    clock.now = 30.0
    ticket = await limits.admit(key, "r", "m", 10, running=0)
    assert ticket.quota.headers()["x-ratelimit-remaining-requests"] == "0"


async def test_tpm_counts_what_was_used_not_what_was_reserved() -> None:
    clock = Clock()
    limits, key = LocalLimits(clock), KeyConfig("k", b"k", tpm=1000)
    ticket = await limits.admit(key, "r", "m", 900, running=0)
    limits.finish(ticket, Usage(30, 20))  # 50 used: 950 left
    ticket = await limits.admit(key, "r", "m", 900, running=0)
    assert ticket.quota.tokens == 50
    limits.finish(ticket, None)  # cut short, count unknown: the reservation stands
    second = await limits.admit(key, "r", "m", 900, running=0)  # 50 left: admitted, in debt
    with pytest.raises(RateLimited, match="tokens per minute"):
        await limits.admit(key, "r", "m", 10, running=0)
    limits.finish(second, Usage(0, 0))  # a request that never reached a worker used nothing
    assert (await limits.admit(key, "r", "m", 10, running=0)).quota.tokens == 40


async def test_max_concurrent_counts_requests_in_flight() -> None:
    limits, key = LocalLimits(Clock()), KeyConfig("k", b"k", max_concurrent=2)
    await limits.admit(key, "r", "m", 10, running=1)
    with pytest.raises(RateLimited, match="2 requests in flight"):
        await limits.admit(key, "r", "m", 10, running=2)


async def test_usage_is_counted_by_day_key_and_model() -> None:
    limits = LocalLimits(Clock())
    for key, model, usage in [("a", "m", Usage(3, 4)), ("a", "m", Usage(1, 1)), ("b", "n", None)]:
        limits.finish(await limits.admit(KeyConfig(key, b"x"), "r", model, 9, 0), usage)
    rows = await limits.usage()
    assert [
        (r["key"], r["model"], r["requests"], r["prompt_tokens"], r["completion_tokens"])
        for r in rows
    ] == [("a", "m", 2, 4, 5), ("b", "n", 1, 0, 0)]
    assert len(rows[0]["day"]) == 10
