"""The server settings of who may address the gateway: the Host names a keyless gateway answers
(DNS rebinding), the browser origins allowed to call it (CORS), and the proxies whose
X-Forwarded-For is believed. Parsing, and the start-up check that ties them to auth."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .auth import AuthConfig
from .checks import ConfigError, nonempty_str

__all__ = [
    "ANY",
    "check_allowed_hosts",
    "is_loopback_name",
    "parse_allowed_hosts",
    "parse_cors",
    "parse_forwarded_allow_ips",
]

ANY = "*"  # in allowed_hosts, cors or forwarded_allow_ips: every one
# An origin as a browser sends it: scheme, host and port only (no path, no trailing slash).
_ORIGIN = re.compile(r"https?://(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
_HOST = re.compile(r"[a-z0-9._-]+|\[[0-9a-f:.]+\]")


def is_loopback_name(host: str) -> bool:
    """Whether a host name (no port; an IPv6 address with or without brackets) can only mean
    this machine: localhost, *.localhost (RFC 6761), 127.0.0.0/8, ::1."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _strings(raw: Any, key: str, expected: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(nonempty_str(v) for v in raw):
        raise ConfigError(f"server.{key}: expected a list of {expected}")
    return [v.strip().lower() for v in raw]


def parse_allowed_hosts(raw: Any) -> tuple[str, ...]:
    """server.allowed_hosts: the Host names (no port) a keyless gateway answers besides loopback
    ones, or "*"."""
    hosts = _strings(raw, "allowed_hosts", 'host names without a port, or "*"')
    for index, host in enumerate(hosts):
        if host != ANY and not _HOST.fullmatch(host):
            raise ConfigError(
                f"server.allowed_hosts[{index}]: expected a host name or address "
                'without a port or path (IPv6 in brackets), or "*"'
            )
    return tuple(hosts)


def parse_cors(raw: Any) -> tuple[str, ...]:
    """server.cors: the browser origins allowed to call the gateway, or "*"."""
    origins = _strings(raw, "cors", 'origins like "https://app.example.com", or "*"')
    for index, origin in enumerate(origins):
        if origin != ANY and not _ORIGIN.fullmatch(origin.removesuffix("/")):
            raise ConfigError(
                f"server.cors[{index}]: expected an origin, scheme://host[:port] "
                'with no path (as a browser sends it), or "*"'
            )
    return tuple(origin.removesuffix("/") for origin in origins)


def parse_forwarded_allow_ips(raw: Any) -> tuple[str, ...]:
    """server.forwarded_allow_ips: the proxies (addresses or networks) whose X-Forwarded-For and
    X-Forwarded-Proto are believed, or "*"."""
    entries = _strings(raw, "forwarded_allow_ips", 'IP addresses or networks, or "*"')
    for index, entry in enumerate(entries):
        try:
            if entry != ANY:
                ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"server.forwarded_allow_ips[{index}]: expected an IP address or "
                'network (10.0.0.0/8), or "*"'
            ) from None
    return tuple(entries)


def check_allowed_hosts(auth: AuthConfig, host: str, allowed_hosts: tuple[str, ...]) -> None:
    """A keyless gateway answers only loopback Host names unless server.allowed_hosts lists
    more: listening elsewhere with none listed (auth.required: false), it could serve nobody but
    this machine, so say so at start rather than with a 403 to every client."""
    if not auth.keys and not allowed_hosts and not is_loopback_name(host.lower()):
        raise ConfigError(
            f"server.allowed_hosts: the gateway listens on {host} with no API keys, and then "
            "answers only requests addressed to a loopback name (DNS rebinding: a web page "
            'could reach it otherwise); list the names clients use, or "*" behind a proxy'
        )
