"""placeholder"""

from __future__ import annotations

from ..common import Result

__all__ = ["replicas"]


async def replicas(*_: object) -> Result:
    return Result("replicas", "replicas (not yet)", "-")
