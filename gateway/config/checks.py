"""The checks every config section is parsed with; each error names the bad key and never shows
a string's text (a key or password in the wrong place must not reach a log)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = [
    "Check",
    "ConfigError",
    "boolean",
    "checked",
    "expand_env",
    "is_int",
    "is_number",
    "key_shown",
    "mapping",
    "non_neg_num",
    "non_negative",
    "nonempty_str",
    "numbers",
    "pos_num",
    "positive",
    "reject_unknown",
    "shown",
]

_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """An invalid config file; the message names the key."""


Check = Callable[[Any], bool]


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def positive(v: Any) -> bool:
    return is_int(v) and v > 0


def non_negative(v: Any) -> bool:
    return is_int(v) and v >= 0


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def numbers(v: Any) -> bool:
    return isinstance(v, list) and all(is_number(x) for x in v)


def non_neg_num(v: Any) -> bool:
    return is_number(v) and v >= 0


def pos_num(v: Any) -> bool:
    return is_number(v) and v > 0


def mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{where}: expected a mapping of keys to values")
    return raw


def reject_unknown(section: Mapping[str, Any], known: Collection[str], where: str) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(
                f"{where}{key_shown(key)}: unknown key (known: {', '.join(sorted(known))})"
            )


_KEY_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def key_shown(key: Any) -> str:
    """An unknown key as an error may name it: a setting's name (a typo worth seeing) as it is;
    anything else (a secret pasted where a key goes) only by its length."""
    if isinstance(key, str) and _KEY_LIKE.fullmatch(key):
        return key
    return f"<{shown(key)}>"


def checked(
    section: Mapping[str, Any], key: str, check: Check, expected: str, where: str, default: Any
) -> Any:
    value = section.get(key, default)
    if not check(value):
        raise ConfigError(f"{where}{key}: expected {expected}, got {shown(value)}")
    return value


def shown(value: Any) -> str:
    """A bad value as an error may show it: numbers and booleans, never a string's text (a key
    or password put in the wrong place must not reach a log or an admin reply)."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def expand_env(text: str, where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise ConfigError(f"{where}: environment variable {match.group(1)} is not set")
        return value

    return _ENV_VAR.sub(substitute, text)
