"""placeholder"""

from __future__ import annotations

from ..common import Result

__all__ = ["peer"]


async def peer(*_: object) -> Result:
    return Result("peer", "peer (not yet)", "-")
