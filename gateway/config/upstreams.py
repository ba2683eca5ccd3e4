"""A model's remote replicas: OpenAI-compatible servers elsewhere (`models[].upstreams`).

Each entry is one replica at a fixed `url`, the OpenAI base URL a client would be given (its path,
`/v1` or another, is kept): another host's `llm-gateway worker`, llama.cpp's llama-server, vLLM,
Ollama. `capacity` is how many requests it serves at once (its slots); `api_key_env` names the
environment variable holding the bearer token it wants, read when the config is loaded;
`upstream_model` is the model's name there, when it differs from ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .checks import ConfigError, checked, mapping, nonempty_str, positive, reject_unknown

__all__ = ["UpstreamConfig", "parse_upstreams"]

_KEYS = {"url", "capacity", "api_key_env", "upstream_model"}


@dataclass(frozen=True)
class UpstreamConfig:
    url: str  # its OpenAI base URL, without a trailing slash: http://10.0.0.5:9000/v1
    capacity: int = 1
    api_key_env: str | None = None
    api_key: str = field(default="", repr=False, compare=False)  # read from api_key_env
    upstream_model: str | None = None  # the model's name there; None: ours

    @property
    def root(self) -> str:
        """Scheme, host and port: where a server's /health is."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


def parse_upstreams(raw: Any, where: str) -> tuple[UpstreamConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}upstreams: expected a list of {{url, capacity, ...}} entries")
    return tuple(_parse_upstream(item, f"{where}upstreams[{i}].") for i, item in enumerate(raw))


def _parse_upstream(raw: Any, where: str) -> UpstreamConfig:
    section = mapping(raw, where.rstrip("."))
    reject_unknown(section, _KEYS, where)
    env = checked(section, "api_key_env", _optional_name, "an environment variable's name",
                  where, None)  # fmt: skip
    if env is not None and env not in os.environ:
        raise ConfigError(f"{where}api_key_env: environment variable {env} is not set")
    return UpstreamConfig(
        url=_parse_url(section.get("url"), where),
        capacity=checked(section, "capacity", positive, "a positive integer", where, 1),
        api_key_env=env,
        api_key=os.environ.get(env, "") if env else "",
        upstream_model=checked(
            section, "upstream_model", _optional_name, "a model name", where, None
        ),
    )


def _optional_name(value: Any) -> bool:
    return value is None or nonempty_str(value)


def _parse_url(raw: Any, where: str) -> str:
    if not nonempty_str(raw):
        raise ConfigError(
            f"{where}url: expected the server's OpenAI base URL (http://host:port/v1)"
        )
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}url: expected an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}url: a base URL has no query or fragment")
    return str(raw).rstrip("/")
