"""A GGUF file's header key/values, read in milliseconds.

`gguf.GGUFReader` builds an object for every entry of every array (262,144 tokenizer strings
for Gemma 3) and takes seconds per file; this reads the scalars and skips through arrays. The
gateway estimates a replica's memory from it (gateway/replicas/footprint.py), the worker the
longest token of the vocabulary (workers/engines/llama.py).
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from gguf import GGUFValueType

__all__ = ["Strings", "gguf_metadata"]

_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_SHORT_ARRAY = 4096  # a numeric array up to this long is a per-layer value: its largest is kept


class Strings(NamedTuple):
    """An array of strings (the vocabulary, the merges), as its size and longest entry."""

    entries: int
    longest: int  # in bytes of UTF-8


@functools.lru_cache(maxsize=64)
def gguf_metadata(path: Path) -> Mapping[str, Any]:
    """`path`'s header key/values: scalars as they are; a numeric array as its largest value
    (a per-layer head count) where short, else as its length; an array of strings as Strings."""
    with Path(path).open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        reader = _Reader(m, 24)
        (count,) = struct.unpack_from("<Q", m, 16)
        return dict(reader.pair() for _ in range(count))


_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _Reader:
    """A cursor over the header's bytes."""

    def __init__(self, data: mmap.mmap, at: int) -> None:
        self.data, self.at = data, at

    def pair(self) -> tuple[str, Any]:
        key = self.text()
        return key, self.value(GGUFValueType(self.u32()))

    def u32(self) -> int:
        (value,) = _U32.unpack_from(self.data, self.at)
        self.at += 4
        return int(value)

    def u64(self) -> int:
        (value,) = _U64.unpack_from(self.data, self.at)
        self.at += 8
        return int(value)

    def text(self) -> str:
        size = self.u64()
        self.at += size
        return self.data[self.at - size : self.at].decode("utf-8", errors="replace")

    def value(self, kind: GGUFValueType) -> Any:
        if kind is GGUFValueType.STRING:
            return self.text()
        if kind is GGUFValueType.ARRAY:
            inner = GGUFValueType(self.u32())
            return self.array(inner, self.u64())
        fmt = struct.Struct(_SCALARS[kind])
        (value,) = fmt.unpack_from(self.data, self.at)
        self.at += fmt.size
        return value

    def array(self, inner: GGUFValueType, length: int) -> Any:
        if inner is GGUFValueType.STRING:
            return self.strings(length)
        if inner is GGUFValueType.ARRAY:  # none in the models we know: read through it
            return max((self.value(inner) for _ in range(length)), default=0)
        fmt = struct.Struct(f"<{length}{_SCALARS[inner][1]}")
        values = fmt.unpack_from(self.data, self.at)
        self.at += fmt.size
        return max(values, default=0) if length <= _SHORT_ARRAY else length

    def strings(self, length: int) -> Strings:
        data, at, longest, unpack = self.data, self.at, 0, _U64.unpack_from
        for _ in range(length):  # the hot loop: 262,144 times for Gemma 3's vocabulary
            (size,) = unpack(data, at)
            at += 8 + size
            if size > longest:
                longest = size
        self.at = at
        return Strings(length, longest)
