"""gzip for the large JSON answers a client asks to have compressed (`Accept-Encoding: gzip`):
a batch of float embeddings is 770 KB as JSON and 340 KB gzipped. Small answers (a chat reply)
go as they are, where compressing would cost more than it saves; SSE streams are never
compressed (a proxy or client buffering a gzip stream would hold events back)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable

__all__ = ["GZIP_AT_LEAST", "GZIP_HEADERS", "accepts_gzip", "compressed", "gzipped"]

GZIP_AT_LEAST = 4096  # bytes: below, a body goes uncompressed
_INLINE_AT_MOST = 65536  # bytes compressed on the event loop (about 2 ms at most)
_LEVEL = 1  # zlib's fastest: most of the saving on JSON numbers
GZIP_HEADERS = [(b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]


def accepts_gzip(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an ASGI request's `Accept-Encoding` admits gzip (not with q=0)."""
    for name, value in headers:
        if name == b"accept-encoding":
            return any(_gzip_allowed(item) for item in value.lower().split(b","))
    return False


def _gzip_allowed(item: bytes) -> bool:
    coding, _, params = item.strip().partition(b";")
    if coding.strip() not in (b"gzip", b"*"):
        return False
    quality = params.strip().removeprefix(b"q=")
    try:
        return not params or float(quality) > 0
    except ValueError:
        return False


def gzipped(body: bytes) -> bytes:
    """`body` as a gzip member (RFC 1952)."""
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, 31)  # wbits 31: the gzip wrapper
    return packer.compress(body) + packer.flush()


async def compressed(body: bytes) -> bytes:
    """`body` gzipped: on the event loop when small, else on a thread (zlib lets go of the GIL:
    a megabyte takes tens of ms the loop's other streams must not wait for)."""
    if len(body) <= _INLINE_AT_MOST:
        return gzipped(body)
    return await asyncio.to_thread(gzipped, body)
