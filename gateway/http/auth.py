"""Who is calling: the key a request presents, matched by its SHA-256 against the configured
keys in constant time; and whether a client address is this machine's own. Pure functions; the
routes raise the errors."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from ..config.auth import ANONYMOUS_NAME, AuthConfig, KeyConfig

__all__ = ["ANONYMOUS", "identify", "is_loopback", "presented_key"]

# The caller of an open gateway (no keys, or auth.required: false without a known key).
ANONYMOUS = KeyConfig(name=ANONYMOUS_NAME, digest=b"")


def presented_key(authorization: str, api_key: str) -> bytes | None:
    """The key sent as `Authorization: Bearer <key>` or, as Azure clients send it, `api-key`.

    Header values reach us decoded as latin-1, so encoding them back gives the bytes sent.
    Whitespace around the key is not part of it.
    """
    scheme, _sep, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip().encode("latin-1", errors="replace")
    return api_key.strip().encode("latin-1", errors="replace") or None


def identify(auth: AuthConfig, key: bytes | None) -> KeyConfig | None:
    """The configured key `key` is; ANONYMOUS where the gateway is open; None: refuse (401)."""
    if key is not None and auth.keys:
        digest = hashlib.sha256(key).digest()
        found = None
        for candidate in auth.keys:  # every one, always: the time says nothing of which matched
            if hmac.compare_digest(digest, candidate.digest):
                found = candidate
        if found is not None:
            return found
    return ANONYMOUS if auth.open else None


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine's own (IPv4-mapped IPv6 included)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False  # no address (a Unix socket) or a name: not provably local
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
