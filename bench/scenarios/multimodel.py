"""placeholder"""

from __future__ import annotations

from ..common import Result

__all__ = ["multimodel"]


async def multimodel(*_: object) -> Result:
    return Result("multimodel", "multimodel (not yet)", "-")
