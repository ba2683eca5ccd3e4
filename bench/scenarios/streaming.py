"""placeholder"""

from __future__ import annotations

from ..common import Result

__all__ = ["streaming"]


async def streaming(*_: object) -> Result:
    return Result("streaming", "streaming (not yet)", "-")
