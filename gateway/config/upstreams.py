"""A model's remote replicas: OpenAI-compatible servers elsewhere (`models[].upstreams`).

An entry with `url` is one replica at that OpenAI base URL, the one a client would be given (its
path, `/v1` or another, is kept): another host's `llm-gateway worker`, llama.cpp's llama-server,
vLLM, Ollama. An entry with `dns: NAME:PORT` is one replica per address the name resolves to
(a Kubernetes headless Service, a compose service with several replicas), re-resolved every
`resolve_every` seconds; `path` (default /v1) completes their URLs, and `hosts_file`, a
hosts-format file read before DNS, serves set-ups with no DNS server of their own (and tests).
Both: `capacity` is how many requests one serves at once (its slots); `api_key_env` names the
environment variable holding the bearer token it wants, read when the config is loaded;
`upstream_model` is the model's name there, when it differs from ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .checks import (
    ConfigError,
    checked,
    mapping,
    nonempty_str,
    pos_num,
    positive,
    reject_unknown,
)

__all__ = ["DnsUpstream", "Upstream", "UpstreamConfig", "parse_upstreams"]

_COMMON = {"capacity", "api_key_env", "upstream_model"}
_KEYS = {"url", *_COMMON}
_DNS_KEYS = {"dns", "path", "resolve_every", "hosts_file", *_COMMON}


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


@dataclass(frozen=True)
class DnsUpstream:
    """Every address `host` resolves to, on `port`: one replica each, as `at` makes it."""

    host: str
    port: int
    template: UpstreamConfig  # capacity, key and model name; its url is the name's own
    path: str = "/v1"
    resolve_every: float = 5.0
    hosts_file: Path | None = None

    def at(self, address: str) -> UpstreamConfig:
        """The replica at `address` (an IPv4 or IPv6 address)."""
        host = f"[{address}]" if ":" in address else address
        return replace(self.template, url=f"http://{host}:{self.port}{self.path}")


Upstream = UpstreamConfig | DnsUpstream


def parse_upstreams(raw: Any, where: str, base_dir: Path) -> tuple[Upstream, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}upstreams: expected a list of {{url or dns, ...}} entries")
    return tuple(
        _parse_entry(item, f"{where}upstreams[{i}].", base_dir) for i, item in enumerate(raw)
    )


def _parse_entry(raw: Any, where: str, base_dir: Path) -> Upstream:
    section = mapping(raw, where.rstrip("."))
    if "dns" not in section:
        reject_unknown(section, _KEYS, where)
        return _parse_upstream(section, where, _parse_url(section.get("url"), where))
    reject_unknown(section, _DNS_KEYS, where)
    host, port = _parse_dns(section["dns"], where)
    path = checked(
        section, "path", _url_path, "a URL path starting with /", where, DnsUpstream.path
    )
    hosts = checked(section, "hosts_file", _optional_name, "a file path", where, None)
    return DnsUpstream(
        host,
        port,
        _parse_upstream(section, where, f"http://{host}:{port}{path}"),
        path=path.rstrip("/"),
        resolve_every=float(
            checked(
                section, "resolve_every", pos_num, "seconds > 0", where, DnsUpstream.resolve_every
            )
        ),
        hosts_file=None if hosts is None else (base_dir / Path(hosts).expanduser()),
    )


def _parse_dns(raw: Any, where: str) -> tuple[str, int]:
    host, _, port = str(raw).rpartition(":") if nonempty_str(raw) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}dns: expected NAME:PORT (a DNS name and the servers' port)")
    return host, int(port)


def _url_path(value: Any) -> bool:
    return nonempty_str(value) and value.startswith("/") and "?" not in value


def _parse_upstream(section: dict[str, Any], where: str, url: str) -> UpstreamConfig:
    env = checked(
        section, "api_key_env", _optional_name, "an environment variable's name", where, None
    )
    if env is not None and env not in os.environ:
        raise ConfigError(f"{where}api_key_env: environment variable {env} is not set")
    return UpstreamConfig(
        url=url,
        capacity=checked(
            section, "capacity", positive, "a positive integer", where, UpstreamConfig.capacity
        ),
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
