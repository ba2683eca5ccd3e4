"""DNS discovery of remote replicas: the addresses a `dns:` upstream's name resolves to now.

A hosts-format file named by the entry is read first (set-ups without a DNS server of their
own, and tests); otherwise the system resolver answers (in Kubernetes, a headless Service's
A/AAAA records: one per ready pod). A failed lookup is None, not "no addresses": a resolver
hiccup must not drain every replica.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from ..config.file import DnsUpstream

__all__ = ["hosts_entries", "resolve"]

log = logging.getLogger("gateway.supervisor")


def hosts_entries(text: str, name: str) -> set[str]:
    """The addresses a hosts-format `text` gives `name` (case-insensitive, comments ignored)."""
    found = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) > 1 and name.lower() in (f.lower() for f in fields[1:]):
            found.add(fields[0])
    return found


async def resolve(entry: DnsUpstream) -> set[str] | None:
    """The addresses `entry.host` has now; None if the lookup failed."""
    if entry.hosts_file is not None:
        listed = _read_hosts(entry.hosts_file, entry.host)
        if listed is None or listed:
            return listed
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(entry.host, entry.port, type=socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror: no such name, or no resolver
        log.warning("upstreams: %s did not resolve (%s); keeping its replicas", entry.host, exc)
        return None
    return {str(info[4][0]) for info in infos}


def _read_hosts(path: Path, name: str) -> set[str] | None:
    try:
        return hosts_entries(path.read_text(), name)
    except OSError as exc:
        log.warning("upstreams: cannot read %s (%s); keeping the replicas", path, exc)
        return None
