"""The `auth` and `redis` sections: named API keys with their models and limits, and where the
limits' state lives. Keys are held as SHA-256 digests only; a plain key in the file is refused."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from .checks import (
    ConfigError,
    boolean,
    checked,
    mapping,
    nonempty_str,
    pos_num,
    positive,
    reject_unknown,
)
from .fields import keys as field_keys

__all__ = [
    "ANONYMOUS_NAME",
    "MIN_API_KEY_LENGTH",
    "AuthConfig",
    "KeyConfig",
    "RedisConfig",
    "check_exposure",
    "hash_key",
    "parse_auth",
    "parse_redis",
]

MIN_API_KEY_LENGTH = 16
ANONYMOUS_NAME = "anonymous"  # the caller of an open gateway; no key may take the name
_KEY_FIELDS = {
    "name",
    "key_sha256",
    "key_env",
    "key",
    "models",
    "rpm",
    "tpm",
    "max_concurrent",
    "weight",
    "admin",
}
# Key names are metric labels and log fields: short, of a safe alphabet.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def hash_key(key: str) -> bytes:
    """The digest a key is known by (what `key_sha256` holds, in hex)."""
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class KeyConfig:
    """One named key: who it is, what it may use, and how much."""

    name: str
    digest: bytes  # SHA-256 of the key
    models: tuple[str, ...] | None = None  # globs over model names and aliases; None: all
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (prompt + completion) per minute
    max_concurrent: int | None = None  # requests in flight at once
    weight: float = 1.0  # share of a busy model's replicas against other keys
    admin: bool = False  # may call /admin/*

    def allows(self, names: tuple[str, ...]) -> bool:
        """Whether this key may use the model known by `names` (its name and aliases)."""
        if self.models is None:
            return True
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.models for name in names)

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_concurrent is not None


@dataclass(frozen=True)
class AuthConfig:
    required: bool | None = None  # None: not set (keys if any; else loopback-only listening)
    keys: tuple[KeyConfig, ...] = ()

    @property
    def open(self) -> bool:
        """Whether a request without a key is served (as the anonymous caller)."""
        return not self.keys or self.required is False


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = None  # None: limits and usage in this process
    on_error: str = "allow"  # Redis unreachable: "allow" (local limits) or "deny" (503)
    lease_seconds: float = 30.0  # a concurrency slot's lease, renewed while its request runs


def parse_auth(raw: Any) -> AuthConfig:
    section = mapping(raw, "auth")
    reject_unknown(section, field_keys(AuthConfig), "auth.")
    required = section.get("required")
    if required is not None and not boolean(required):
        raise ConfigError("auth.required: expected true or false")
    keys_raw = section.get("keys", [])
    if not isinstance(keys_raw, list):
        raise ConfigError("auth.keys: expected a list of keys")
    keys = tuple(_parse_key(entry, index) for index, entry in enumerate(keys_raw))
    _reject_duplicates(keys)
    if required is True and not keys:
        raise ConfigError(
            "auth.required: true, but auth.keys is empty (llm-gateway keygen "
            "prints a key and its config lines)"
        )
    return AuthConfig(required=required, keys=keys)


def _parse_key(raw: Any, index: int) -> KeyConfig:
    section = mapping(raw, f"auth.keys[{index}]")
    name = section.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"auth.keys[{index}].name: expected a name of letters, digits, '.', "
            "'_' or '-' (at most 64), as logs and metrics show it"
        )
    if name == ANONYMOUS_NAME:
        raise ConfigError(f"auth.keys[{index}].name: '{name}' names callers without a key")
    where = f"auth.keys[{index}] ({name})."
    reject_unknown(section, _KEY_FIELDS, where)
    return KeyConfig(
        name=name,
        digest=_digest(section, where),
        models=_parse_globs(section.get("models"), where),
        rpm=_limit(section, "rpm", where),
        tpm=_limit(section, "tpm", where),
        max_concurrent=_limit(section, "max_concurrent", where),
        weight=float(checked(section, "weight", pos_num, "a number > 0", where, KeyConfig.weight)),
        admin=checked(section, "admin", boolean, "true or false", where, KeyConfig.admin),
    )


def _digest(section: dict[str, Any], where: str) -> bytes:
    if "key" in section:
        raise ConfigError(
            f"{where}key: a plain key in the file is refused; use key_sha256 "
            "(`llm-gateway keygen` prints it) or key_env"
        )
    given = [field for field in ("key_sha256", "key_env") if field in section]
    if len(given) != 1:
        raise ConfigError(f"{where}key_sha256: give exactly one of key_sha256 or key_env")
    if given[0] == "key_sha256":
        digest = section["key_sha256"]
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest.lower()):
            raise ConfigError(f"{where}key_sha256: expected 64 hexadecimal digits")
        return bytes.fromhex(digest)
    return hash_key(_key_from_env(section["key_env"], where))


def _key_from_env(variable: Any, where: str) -> str:
    if not nonempty_str(variable):
        raise ConfigError(f"{where}key_env: expected the name of an environment variable")
    key = os.environ.get(variable)
    if key is None:
        raise ConfigError(f"{where}key_env: environment variable {variable} is not set")
    key = key.strip()
    if len(key) < MIN_API_KEY_LENGTH:
        # An unset variable that ${VAR:-} turned into "" must never become a key "" matches.
        raise ConfigError(
            f"{where}key_env: the key in {variable} has {len(key)} characters; "
            f"a key needs at least {MIN_API_KEY_LENGTH}"
        )
    return key


def _parse_globs(raw: Any, where: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(nonempty_str(glob) for glob in raw):
        raise ConfigError(f"{where}models: expected a list of model names or globs")
    return tuple(raw)


def _limit(section: dict[str, Any], field: str, where: str) -> int | None:
    value = section.get(field)
    if value is not None and not positive(value):
        raise ConfigError(f"{where}{field}: expected a positive integer (or no {field}: no limit)")
    return value


def _reject_duplicates(keys: tuple[KeyConfig, ...]) -> None:
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for index, key in enumerate(keys):
        if key.name in names:
            raise ConfigError(
                f"auth.keys[{index}].name: '{key.name}' is already the name of "
                f"auth.keys[{names[key.name]}]"
            )
        if key.digest in digests:
            raise ConfigError(
                f"auth.keys[{index}] ({key.name}): the same key as auth.keys[{digests[key.digest]}]"
            )
        names[key.name], digests[key.digest] = index, index


def parse_redis(raw: Any) -> RedisConfig:
    section = mapping(raw, "redis")
    reject_unknown(section, field_keys(RedisConfig), "redis.")
    url = section.get("url")
    if url is not None and not (
        nonempty_str(url) and url.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise ConfigError("redis.url: expected a redis://, rediss:// or unix:// URL")
    on_error = checked(
        section,
        "on_error",
        lambda v: v in ("allow", "deny"),
        "allow or deny",
        "redis.",
        RedisConfig.on_error,
    )
    lease = checked(
        section, "lease_seconds", pos_num, "seconds > 0", "redis.", RedisConfig.lease_seconds
    )
    return RedisConfig(url=url, on_error=on_error, lease_seconds=float(lease))


def check_exposure(auth: AuthConfig, host: str) -> None:
    """Safe by default, as Redis's protected mode is: no keys on a non-loopback address is an
    error unless `auth.required: false` says an open gateway is meant."""
    if not auth.keys and auth.required is None and host not in _LOOPBACK_HOSTS:
        raise ConfigError(
            f"auth.keys: the gateway listens on {host} with no API keys; add keys "
            "(`llm-gateway keygen --name NAME` prints one) or set auth.required: false to serve "
            "anyone who can reach the port"
        )
