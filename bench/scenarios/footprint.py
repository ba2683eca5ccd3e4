"""placeholder"""

from __future__ import annotations

from ..common import Result

__all__ = ["footprint"]


async def footprint(*_: object) -> Result:
    return Result("footprint", "footprint (not yet)", "-")
