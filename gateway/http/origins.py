"""What a browser's request may do, decided from its headers alone (pure: gateway/http/browsers.py
acts on it).

A gateway without keys trusts whoever reaches it, and a web page on another origin reaches a
loopback gateway through the visitor's browser: with `no-cors` POSTs (simple requests need no
preflight), or by DNS rebinding (its own name, resolved to 127.0.0.1). Browsers say what they
are doing, and curl and SDK clients send none of it: a keyless gateway answers only Host names
that can only mean this machine (or server.allowed_hosts), refuses an Origin that is neither its
own nor in server.cors, and refuses what Sec-Fetch-Site marks as another site's, but a link
followed to /ui. CORS (server.cors) lets listed origins call it and read its answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from ..config.edge import ANY, is_loopback_name
from ..config.file import ServerConfig

__all__ = [
    "EXPOSED",
    "browser_headers",
    "cors_origin",
    "hostname",
    "is_preflight",
    "preflight_headers",
    "refusal",
    "response_headers",
]

# The headers these decisions read; ASGI servers give header names in lower case.
_READ = frozenset(
    {
        b"host",
        b"origin",
        b"sec-fetch-site",
        b"sec-fetch-mode",
        b"sec-fetch-dest",
        b"access-control-request-method",
        b"access-control-request-headers",
    }
)
_OTHER_SITE = frozenset({b"cross-site", b"same-site"})  # same-site: another port of this host
# What a page may read of an answer beyond the CORS-safelisted headers.
EXPOSED = (
    b"x-request-id, retry-after, x-ratelimit-limit-requests, "
    b"x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, "
    b"x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, x-queue-wait-ms, "
    b"x-queue-position"
)
_METHODS = b"GET, POST, OPTIONS, HEAD"
_MAX_AGE = b"600"  # seconds a browser may reuse a preflight's answer
# Access-Control-Request-Headers: header names, comma-separated. The gateway reads no header a
# page could abuse (the key is the page's to send), so the names asked for are allowed as asked.
_NAMES = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")

_HOST_NOT_ALLOWED = (
    "host_not_allowed",
    "This gateway has no API keys and answers only requests "
    "addressed to a loopback name or one in server.allowed_hosts.",
)
_ORIGIN_NOT_ALLOWED = (
    "origin_not_allowed",
    "This gateway has no API keys and answers web pages "
    "only from its own origin or one in server.cors.",
)
_CROSS_SITE = (
    "cross_site_request",
    "This gateway has no API keys and answers no request "
    "another site's page makes, but a link followed to it.",
)


def browser_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request headers these decisions read; none at all from curl or an SDK."""
    return {name: value for name, value in headers if name in _READ}


def refusal(seen: dict[bytes, bytes], method: str, server: ServerConfig) -> tuple[str, str] | None:
    """Why a keyless gateway refuses this request, as (code, message); None: serve it."""
    host = seen.get(b"host")
    if host is not None and not _host_allowed(host, server.allowed_hosts):
        return _HOST_NOT_ALLOWED
    origin = seen.get(b"origin")
    if origin is not None:
        return None if _origin_allowed(origin, host, server.cors) else _ORIGIN_NOT_ALLOWED
    if seen.get(b"sec-fetch-site") in _OTHER_SITE and not _followed_link(seen, method):
        return _CROSS_SITE
    return None


def hostname(host: bytes) -> str:
    """A Host header's name, without its port: "[::1]:8000" -> "[::1]"."""
    text = host.decode("latin-1").lower()
    if text.startswith("["):
        return text[: text.find("]") + 1]
    return text.partition(":")[0]


@functools.lru_cache(maxsize=256)  # a client sends the same Host every time; bounded: it picks it
def _host_allowed(host: bytes, allowed: tuple[str, ...]) -> bool:
    name = hostname(host)
    return ANY in allowed or is_loopback_name(name) or name in allowed


def _origin_allowed(origin: bytes, host: bytes | None, cors: tuple[str, ...]) -> bool:
    """The gateway's own origin (a page it served: /ui), or one server.cors allows."""
    text = origin.decode("latin-1").lower()
    own = host is not None and text.partition("://")[2] == host.decode("latin-1").lower()
    return own or _listed(text, cors)


def _listed(origin: str, cors: tuple[str, ...]) -> bool:
    return ANY in cors or origin in cors


def _followed_link(seen: dict[bytes, bytes], method: str) -> bool:
    """A top-level navigation (not a frame, not a form's POST): someone opening /ui."""
    return (
        method in ("GET", "HEAD")
        and seen.get(b"sec-fetch-mode") == b"navigate"
        and seen.get(b"sec-fetch-dest", b"document") == b"document"
    )


def cors_origin(seen: dict[bytes, bytes], cors: tuple[str, ...]) -> bytes | None:
    """The request's Origin, if server.cors allows it: its answer gets CORS headers."""
    origin = seen.get(b"origin")
    if origin is None or not cors:
        return None
    return origin if _listed(origin.decode("latin-1").lower(), cors) else None


def is_preflight(method: str, seen: dict[bytes, bytes]) -> bool:
    return method == "OPTIONS" and b"access-control-request-method" in seen


def preflight_headers(origin: bytes, seen: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The answer to an allowed origin's preflight: any of our methods, the headers it asks."""
    headers = [
        (b"access-control-allow-origin", origin),
        (b"vary", b"Origin"),
        (b"access-control-allow-methods", _METHODS),
        (b"access-control-max-age", _MAX_AGE),
    ]
    asked = seen.get(b"access-control-request-headers", b"").strip()
    if _NAMES.fullmatch(asked):
        headers.append((b"access-control-allow-headers", asked))
    return headers


def response_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    """What an allowed origin's answer adds: the page may read it, and these headers of it."""
    return [
        (b"access-control-allow-origin", origin),
        (b"vary", b"Origin"),
        (b"access-control-expose-headers", EXPOSED),
    ]
