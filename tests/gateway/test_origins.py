"""What a browser's request may do (gateway/http/origins.py), from its headers alone; the real
browser, against a real gateway, is in tests/standin/test_browsers.py."""

from __future__ import annotations

import pytest

from gateway.config.file import ServerConfig
from gateway.http.origins import (
    EXPOSED,
    browser_headers,
    cors_origin,
    hostname,
    is_preflight,
    preflight_headers,
    refusal,
)

PLAIN = ServerConfig()
APP = "https://app.example"
GW = b"127.0.0.1:8000"


def verdict(server: ServerConfig = PLAIN, method: str = "POST", **headers: str) -> str | None:
    """The refusal's code for a request with these headers (`_` for `-`); None: served."""
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    why = refusal(browser_headers(raw), method, server)
    return None if why is None else why[0]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8000",
        "localhost",
        "LOCALHOST:1",
        "gw.localhost:80",
        "[::1]:8000",
        "127.9.9.9",
        "[::ffff:127.0.0.1]",
    ],
)
def test_loopback_host_names_are_answered(host: str) -> None:
    assert verdict(host=host) is None


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "localhost.evil.example",
        "10.0.0.5:8000",
        "[::2]",
        "0.0.0.0",
        "[::1",
    ],
)
def test_other_host_names_are_refused(host: str) -> None:
    assert verdict(host=host) == "host_not_allowed"


def test_allowed_hosts_adds_names_and_star_allows_any() -> None:
    listed = ServerConfig(allowed_hosts=("gateway.internal",))
    assert verdict(listed, host="gateway.internal:8000") is None
    assert verdict(listed, host="evil.example") == "host_not_allowed"
    assert verdict(ServerConfig(allowed_hosts=("*",)), host="evil.example") is None


def test_curl_and_sdk_requests_carry_nothing_to_refuse() -> None:
    assert verdict() is None  # no Host at all (HTTP/1.0)
    assert (
        verdict(
            host="127.0.0.1:8000",
            authorization="Bearer x",
            user_agent="OpenAI/Python",
            x_stainless_os="Linux",
        )
        is None
    )


def test_an_origin_is_served_if_it_is_the_gateways_own_or_listed() -> None:
    assert verdict(host="127.0.0.1:8000", origin="http://127.0.0.1:8000") is None  # the /ui page
    assert verdict(host="127.0.0.1:8000", origin="http://127.0.0.1:9000") == "origin_not_allowed"
    assert verdict(host="127.0.0.1:8000", origin="null") == "origin_not_allowed"
    assert verdict(origin="http://127.0.0.1:8000") == "origin_not_allowed"  # no Host to be
    listed = ServerConfig(cors=(APP,))
    assert verdict(listed, host="localhost:8000", origin="https://APP.example") is None
    assert verdict(ServerConfig(cors=("*",)), host="localhost", origin="https://a.b") is None


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_another_sites_request_without_origin_is_refused_but_a_followed_link(site: str) -> None:
    # A no-cors GET (an <img>, a <script>) carries no Origin; Sec-Fetch-Site says whose it is.
    fetch = {"host": "localhost", "sec_fetch_site": site}
    assert verdict(method="GET", sec_fetch_mode="no-cors", **fetch) == "cross_site_request"
    link = {**fetch, "sec_fetch_mode": "navigate", "sec_fetch_dest": "document"}
    assert verdict(method="GET", **link) is None
    assert verdict(method="HEAD", **link) is None
    assert verdict(method="GET", **{**link, "sec_fetch_dest": "iframe"}) == "cross_site_request"
    assert verdict(method="POST", **link) == "cross_site_request"  # a form's POST


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_the_gateways_own_pages_and_typed_urls_are_served(site: str) -> None:
    assert verdict(method="GET", host="localhost", sec_fetch_site=site) is None


def test_hostname_drops_the_port() -> None:
    assert [hostname(h) for h in (b"a.b:80", b"A.B", b"[::1]:8000", b"[::1]")] == [
        "a.b",
        "a.b",
        "[::1]",
        "[::1]",
    ]


def test_cors_answers_listed_origins_only() -> None:
    seen = {b"origin": b"https://app.example", b"access-control-request-method": b"POST"}
    assert cors_origin(seen, (APP,)) == b"https://app.example"
    assert cors_origin(seen, ("*",)) == b"https://app.example"  # echoed: never a bare "*"
    assert cors_origin(seen, ()) is None
    assert cors_origin(seen, ("https://other.example",)) is None
    assert cors_origin({}, (APP,)) is None
    assert is_preflight("OPTIONS", seen) and not is_preflight("POST", seen)
    assert not is_preflight("OPTIONS", {b"origin": b"https://app.example"})


def test_a_preflight_allows_the_headers_asked_for_when_they_are_header_names() -> None:
    asked = b"authorization, content-type, x-stainless-os,x-stainless-retry-count"
    headers = dict(
        preflight_headers(b"https://app.example", {b"access-control-request-headers": asked})
    )
    assert headers[b"access-control-allow-headers"] == asked
    assert headers[b"access-control-allow-origin"] == b"https://app.example"
    assert headers[b"access-control-allow-methods"] == b"GET, POST, OPTIONS, HEAD"
    assert headers[b"vary"] == b"Origin" and int(headers[b"access-control-max-age"]) > 0
    bad = {b"access-control-request-headers": b"x-a, x-b\r\nset-cookie: a=b"}
    assert b"access-control-allow-headers" not in dict(preflight_headers(b"https://a.b", bad))


def test_every_rate_limit_and_queue_header_is_exposed() -> None:
    exposed = EXPOSED.decode().split(", ")
    assert {"x-request-id", "retry-after", "x-queue-wait-ms", "x-queue-position"} <= set(exposed)
    assert {
        f"x-ratelimit-{what}-{unit}"
        for what in ("limit", "remaining", "reset")
        for unit in ("requests", "tokens")
    } <= set(exposed)
