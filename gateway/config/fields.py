"""Each config fact once: a section's keys and defaults are read off its frozen dataclass, and its
plain settings parsed from one table of checks, so a new setting is a field with a default plus a
line in the table (and the reference in docs/configuration.md, checked against both by a test)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import MISSING, fields
from typing import Any

from .checks import Check, checked

__all__ = ["Checks", "defaults", "keys", "scalars"]

# A plain setting's check and what a valid value is, by key.
Checks = Mapping[str, tuple[Check, str]]


def keys(cls: type, derived: Collection[str] = ()) -> frozenset[str]:
    """The keys a section of `cls` may hold: its fields, less those worked out from others."""
    return frozenset(f.name for f in fields(cls) if f.name not in derived)


def defaults(cls: type) -> dict[str, Any]:
    """Each field's default, where it has a plain one."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def scalars(section: Mapping[str, Any], cls: type, table: Checks, where: str) -> dict[str, Any]:
    """The plain settings of `section` in `table`, checked, with `cls`'s defaults for the ones
    not given; a number where the field is a float becomes one."""
    floats = {f.name for f in fields(cls) if f.type in ("float", float)}
    values = defaults(cls)
    parsed = {}
    for key, (check, expected) in table.items():
        value = checked(section, key, check, expected, where, values[key])
        parsed[key] = float(value) if key in floats and value is not None else value
    return parsed
