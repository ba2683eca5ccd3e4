"""Who gets one of the gateway's client connections (the bookkeeping; gateway/http/edge.py acts
on it): at most server.max_connections in all, and server.max_connections_per_client from one
address, so that one client's idle sockets cannot leave nothing for the others.

Past either cap a connection is not refused at once: it waits in the probes' reserve, a few
connections where only a liveness or readiness probe (GET or HEAD of /health or /ready) is
served, and only if its request line comes within PROBE_WAIT. A full reserve makes room by
refusing its oldest connection: idle sockets, however many, cannot keep a probe out, so a
kubelet does not restart a healthy gateway that is being flooded.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Generic, TypeVar

__all__ = ["PROBE_LINE_MAX", "PROBE_WAIT", "RESERVE", "Seats", "client_key", "is_probe"]

RESERVE = 16  # connections past the caps at once (the open-files reserve has room for them)
PROBE_WAIT = 0.5  # seconds to send the request line: a probe sends it as it connects
PROBE_LINE_MAX = 64  # a probe's request line is shorter
_PROBE = re.compile(rb"(?:GET|HEAD) /(?:health|ready)(?:\?[^ ]*)? HTTP/1\.[01]\r?\n")

Connection = TypeVar("Connection")


class Seats(Generic[Connection]):
    """Open connections, in all and per client address; the probes' reserve, oldest first."""

    def __init__(self, reserve: int = RESERVE) -> None:
        self.taken = 0
        self._by_client: dict[str, int] = {}
        self._reserve = reserve
        self._waiting: dict[Connection, None] = {}  # a dict keeps insertion order

    def take(self, client: str, cap: int, per_client: int) -> bool:
        """A seat for a new connection from `client`, if both caps leave one: whether it got it."""
        held = self._by_client.get(client, 0)
        if self.taken >= cap or held >= per_client:
            return False
        self.taken += 1
        self._by_client[client] = held + 1
        return True

    def give_back(self, client: str) -> None:
        self.taken -= 1
        held = self._by_client[client] - 1
        if held:
            self._by_client[client] = held
        else:
            del self._by_client[client]  # the table holds only addresses with a connection open

    def wait(self, connection: Connection) -> Connection | None:
        """Put `connection` in the probes' reserve; return the oldest one, if it must leave for
        it (the reserve was full): the caller refuses it."""
        evicted = None
        if len(self._waiting) >= self._reserve:
            evicted = next(iter(self._waiting))
            del self._waiting[evicted]
        self._waiting[connection] = None
        return evicted

    def leave(self, connection: Connection) -> None:
        """`connection` is out of the reserve: served (a probe), refused or closed."""
        self._waiting.pop(connection, None)


def client_key(address: str) -> str:
    """What the per-client cap counts by: the address; for IPv6, its /64, which one host holds
    whole (one address each would let it open a cap's worth per address)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.packed[:8].hex()


def is_probe(line: bytes) -> bool:
    """Whether a request line (with its line end) is a probe's: GET or HEAD /health or /ready."""
    return _PROBE.match(line) is not None
