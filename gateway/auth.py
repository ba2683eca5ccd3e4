"""Who may call what: API keys compared as bytes, and admin routes kept to loopback when no key
is configured. Pure functions; the routes raise the errors."""

from __future__ import annotations

import hmac
import ipaddress

__all__ = ["bearer_matches", "is_loopback"]


def bearer_matches(header: str, keys: tuple[str, ...]) -> bool:
    """Whether `header` is "Bearer <one of keys>", compared as bytes in constant time.

    Header values reach us decoded as latin-1, so encoding them back gives the bytes sent;
    compare_digest on str raises for non-ASCII text, which made any such token a 500.
    Whitespace around the token is not part of it.
    """
    scheme, _sep, token = header.strip().partition(" ")
    sent = token.strip().encode("latin-1", errors="replace")
    matches = [hmac.compare_digest(sent, key.encode()) for key in keys]  # every key, always
    return scheme.lower() == "bearer" and any(matches)


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine's own (IPv4-mapped IPv6 included)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False  # no address (a Unix socket) or a name: not provably local
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
