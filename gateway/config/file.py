"""config.yaml, parsed once into frozen dataclasses; every error names the bad key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .auth import AuthConfig, KeyConfig, RedisConfig, check_exposure, parse_auth, parse_redis
from .checks import (
    Check,
    ConfigError,
    boolean,
    checked,
    expand_env,
    is_int,
    is_number,
    key_shown,
    mapping,
    non_neg_num,
    non_negative,
    nonempty_str,
    numbers,
    pos_num,
    positive,
    reject_unknown,
    shown,
)
from .edge import (
    check_allowed_hosts,
    parse_allowed_hosts,
    parse_cors,
    parse_forwarded_allow_ips,
)
from .fields import Checks, keys, scalars
from .llama_server import (
    ENGINES,
    GGUF_ENGINES,
    LlamaServerConfig,
    check_server_llama,
    locate_binary,
    missing_binary,
    parse_llama_server,
    parse_server_args,
    unserved_paths,
)
from .scaling import (
    ScalingConfig,
    parse_budgets,
    parse_replica_range,
    parse_scaling,
    parse_size,
)
from .upstreams import DnsUpstream, Upstream, UpstreamConfig, parse_upstreams

__all__ = [
    "LLAMA_PARAMS",
    "WORKER_LLAMA_PARAMS",
    "AuthConfig",
    "ConfigError",
    "DnsUpstream",
    "GatewayConfig",
    "HealthConfig",
    "KeyConfig",
    "LlamaServerConfig",
    "ModelConfig",
    "OutlierConfig",
    "RedisConfig",
    "ScalingConfig",
    "ServerConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 4 * 1024 * 1024
    drain_timeout: float = 30.0
    # The HTTP connection's limits (gateway/http/edge.py); the body timeout is between two chunks.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 2048
    max_header_bytes: int = 16384
    max_url_bytes: int = 8192
    metrics: bool = True  # false: no /metrics and nothing recorded for it (needs a restart)
    metrics_auth: bool = False  # true: /metrics needs a configured key (Prometheus sends one)
    # The most a replica's answer may hold: a whole body, or one event of a stream (a server
    # that sends 2 GiB, or a stream with no blank line, must not fill the gateway's memory).
    max_upstream_bytes: int = 64 * 1024 * 1024
    # Who may address the gateway (gateway/config/edge.py, gateway/http/browsers.py).
    max_connections_per_client: int = 1024  # generous: local clients all share 127.0.0.1
    allowed_hosts: tuple[str, ...] = ()  # Host names a keyless gateway answers beyond loopback
    cors: tuple[str, ...] = ()  # browser origins allowed to call it; empty: no CORS
    forwarded_allow_ips: tuple[str, ...] = ()  # proxies whose X-Forwarded-* are believed


@dataclass(frozen=True)
class HealthConfig:
    """How the supervisor checks a running worker's /status."""

    interval: float = 2.0  # seconds between checks
    timeout: float = 5.0  # seconds a check may take: a busy worker on a loaded host is slow
    failures: int = 3  # failed checks in a row before the worker is killed and restarted


@dataclass(frozen=True)
class OutlierConfig:
    """When a replica answering errors leaves rotation for a while (Envoy's outlier ejection,
    gateway/replicas/outliers.py)."""

    consecutive_errors: int = 5  # 5xx answers, timeouts or unreachable, in a row
    base_ejection_time: float = 30.0  # seconds out, times the replica's ejections so far
    max_ejection_time: float = 300.0  # the longest one ejection lasts
    max_ejection_percent: int = 50  # of a model's replicas out at once, rounded down (0: never)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path | None
    aliases: tuple[str, ...] = ()
    engine: str = "llama"  # "llama" (our worker), "llama-server" (llama.cpp's) or "standin"
    replicas: int = 1  # local replica slots: the most it runs (`replicas.max`)
    capacity: int = 1  # requests one replica serves at once (llama: slots batched in one context)
    gpus: tuple[str, ...] | None = None  # one per slot; None: CPU, or placed (`gpus_auto`)
    min_replicas: int | None = None  # always running (`replicas.min`); None: all `replicas`
    idle_ttl: float | None = None  # seconds unused before a replica above min stops
    scale_up_queue: int = 1  # requests waiting that start another replica, up to the max
    gpus_auto: bool = False  # each new replica on the GPU with the most free memory budget
    memory: int | None = None  # bytes a replica needs, where set; else estimated from the GGUF
    max_queue: int = 64
    queue_timeout: float = 30.0
    startup_timeout: float = 300.0
    first_token_timeout: float = 300.0
    # Seconds a stream may pass with no event: from its worker (it ends with an error event), or
    # taken by its client (one that reads nothing frees its slot): interactive use, not a minute.
    idle_timeout: float = 15.0
    llama: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    standin: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    matryoshka: bool = False  # its embeddings may be shortened (`dimensions`)
    accept_token_ids: bool = False  # token-id input to /v1/embeddings is its own ids
    upstreams: tuple[Upstream, ...] = ()  # remote replicas, beside the local ones
    routing: str = "least_busy"  # or "prefix_affinity": to the replica holding the prompt's prefix
    outlier: OutlierConfig = OutlierConfig()
    server_args: tuple[str, ...] = ()  # llama-server: flags after the gateway's own
    server_binary: Path | None = None  # llama-server: the one its replicas run (found at load)
    # API paths its engine cannot serve, each with the 400's message (a request never reaches
    # a replica that would answer 404 or 501 in words of its own).
    unserved: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def device(self, index: int) -> str | None:
        """The CUDA_VISIBLE_DEVICES value configured for slot `index`; None: CPU, or placed when
        it starts (`gpus: auto`)."""
        return None if self.gpus is None else self.gpus[index]

    @property
    def floor(self) -> int:
        """The local replicas always running."""
        return self.replicas if self.min_replicas is None else self.min_replicas

    @property
    def affinity(self) -> bool:
        """Whether it routes by prompt prefix (`routing: prefix_affinity`), else least busy."""
        return self.routing == "prefix_affinity"

    @property
    def on_demand(self) -> bool:
        """Whether its replica count moves (between `floor` and `replicas`)."""
        return self.floor < self.replicas

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def uses_worker(self) -> bool:
        """Whether its replicas are our worker process (a spare one can become one)."""
        return self.engine != "llama-server"

    @property
    def loads_gguf(self) -> bool:
        """Whether its replicas load its GGUF file (their memory can be estimated from it)."""
        return self.engine in GGUF_ENGINES


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    models: tuple[ModelConfig, ...]
    health: HealthConfig = HealthConfig()
    watch: bool = False  # reload when the file changes
    auth: AuthConfig = field(default_factory=AuthConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    memory: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # budgets
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    llama_server: LlamaServerConfig = field(default_factory=LlamaServerConfig)

    def model_by_name(self) -> dict[str, ModelConfig]:
        """Every name and alias mapped to its model."""
        return {name: model for model in self.models for name in model.names}


# The llama_cpp.Llama keyword arguments ops may set, each with what a valid value is.
# llama options the worker reads itself rather than passing to llama_cpp.Llama: the KV layout of
# a batching worker's slots (capacity > 1), llama.cpp's `kv_unified` context parameter.
WORKER_LLAMA_PARAMS = frozenset({"kv_unified"})
LLAMA_PARAMS: Mapping[str, tuple[Check, str]] = MappingProxyType(
    {
        "n_ctx": (positive, "a positive integer"),
        "n_batch": (positive, "a positive integer"),
        "n_ubatch": (positive, "a positive integer"),
        "n_threads": (positive, "a positive integer"),
        "n_threads_batch": (positive, "a positive integer"),
        "n_gpu_layers": (lambda v: is_int(v) and v >= -1, "an integer >= -1 (-1: all layers)"),
        "main_gpu": (non_negative, "a non-negative integer"),
        "split_mode": (non_negative, "a non-negative integer"),
        "tensor_split": (numbers, "a list of numbers"),
        "seed": (is_int, "an integer"),
        "embedding": (boolean, "true or false"),
        "logits_all": (boolean, "true or false"),
        "pooling_type": (lambda v: is_int(v) and -1 <= v <= 4, "an integer from -1 to 4"),
        "flash_attn": (boolean, "true or false"),
        "offload_kqv": (boolean, "true or false"),
        "kv_unified": (boolean, "true or false"),  # one of WORKER_LLAMA_PARAMS
        "use_mmap": (boolean, "true or false"),
        "use_mlock": (boolean, "true or false"),
        "chat_format": (nonempty_str, "a chat format name"),
        "rope_freq_base": (is_number, "a number"),
        "rope_freq_scale": (is_number, "a number"),
        "type_k": (non_negative, "a non-negative integer"),
        "type_v": (non_negative, "a non-negative integer"),
        "last_n_tokens_size": (non_negative, "a non-negative integer"),
        "verbose": (boolean, "true or false"),
    }
)

STANDIN_PARAMS: Mapping[str, tuple[Check, str]] = MappingProxyType(
    {
        "token_delay": (lambda v: is_number(v) and v >= 0, "a number of seconds >= 0"),
        "tokens": (positive, "a positive integer"),
        "load_seconds": (lambda v: is_number(v) and v >= 0, "a number of seconds >= 0"),
        "embedding_dim": (non_negative, "an integer >= 0 (0: no embeddings)"),
        "n_ctx": (positive, "a positive integer"),
        "n_vocab": (positive, "a positive integer"),
        "fail_load": (nonempty_str, "an error message the load fails with"),
        "error_after_tokens": (non_negative, "an integer >= 0"),
        "exit_after_tokens": (non_negative, "an integer >= 0"),
        "crash_on_warmup": (boolean, "true or false"),
        "crash_on_request": (boolean, "true or false"),
        "prefill_seconds": (lambda v: is_number(v) and v >= 0, "a number of seconds >= 0"),
    }
)

ROUTINGS = ("least_busy", "prefix_affinity")

# The plain settings of each section: its check and what a valid value is (defaults: the
# dataclasses'). The rest (lists, sub-sections, settings worked out together) have parsers.
_SERVER_SETTINGS: Checks = {
    "host": (nonempty_str, "a host name or address"),
    "port": (lambda v: is_int(v) and 0 <= v <= 65535, "a port number 0-65535"),
    "max_body_bytes": (positive, "a positive integer"),
    "drain_timeout": (non_neg_num, "seconds >= 0"),
    "header_timeout": (pos_num, "seconds > 0"),
    "body_timeout": (pos_num, "seconds > 0"),
    "max_connections": (positive, "a positive integer"),
    "max_header_bytes": (positive, "a positive integer"),
    "max_url_bytes": (positive, "a positive integer"),
    "metrics": (boolean, "true or false"),
    "metrics_auth": (boolean, "true or false"),
    "max_upstream_bytes": (positive, "a positive integer"),
    "max_connections_per_client": (positive, "a positive integer"),
}
_HEALTH_SETTINGS: Checks = {
    "interval": (pos_num, "seconds > 0"),
    "timeout": (pos_num, "seconds > 0"),
    "failures": (positive, "a positive integer"),
}
_OUTLIER_SETTINGS: Checks = {
    "consecutive_errors": (positive, "a positive integer"),
    "base_ejection_time": (pos_num, "seconds > 0"),
    "max_ejection_time": (pos_num, "seconds > 0"),
    "max_ejection_percent": (lambda v: is_int(v) and 0 <= v <= 100, "an integer from 0 to 100"),
}
_MODEL_SETTINGS: Checks = {
    "engine": (lambda v: v in ENGINES, "llama, llama-server or standin"),
    "scale_up_queue": (positive, "a positive integer"),
    "max_queue": (non_negative, "an integer >= 0"),
    "queue_timeout": (pos_num, "seconds > 0"),
    "startup_timeout": (pos_num, "seconds > 0"),
    "first_token_timeout": (pos_num, "seconds > 0"),
    "idle_timeout": (pos_num, "seconds > 0"),
    "matryoshka": (boolean, "true or false"),
    "accept_token_ids": (boolean, "true or false"),
    "routing": (lambda v: v in ROUTINGS, " or ".join(ROUTINGS)),
}
# A model's fields worked out from its other keys, never written in the file.
_MODEL_DERIVED = ("min_replicas", "gpus_auto", "server_binary", "unserved")
_TOP_KEYS = keys(GatewayConfig)
_SERVER_KEYS = keys(ServerConfig)
_MODEL_KEYS = keys(ModelConfig, _MODEL_DERIVED)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a config file; raise ConfigError naming the bad key."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_config(raw, base_dir=file.resolve().parent)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the snippet of the file PyYAML quotes: it may hold a key."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_config(raw: Any, base_dir: Path) -> GatewayConfig:
    """Validate an already-decoded config document."""
    top = mapping(raw, "config file")
    reject_unknown(top, _TOP_KEYS, "")
    server = _parse_server(top.get("server", {}))
    auth = parse_auth(top.get("auth", {}))
    check_exposure(auth, server.host)
    check_allowed_hosts(auth, server.host, server.allowed_hosts)
    if server.metrics_auth and not auth.keys:
        raise ConfigError(
            "server.metrics_auth: true, but auth.keys is empty: no key could read /metrics"
        )
    health = _parse_health(top.get("health", {}))
    models_raw = top.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError("models: expected a non-empty list of models")
    llama_server = parse_llama_server(top.get("llama_server", {}), base_dir)
    models = tuple(_parse_model(m, i, base_dir, llama_server) for i, m in enumerate(models_raw))
    _reject_duplicate_names(models)
    watch = checked(top, "watch", boolean, "true or false", "", GatewayConfig.watch)
    return GatewayConfig(
        server=server,
        models=models,
        health=health,
        watch=watch,
        auth=auth,
        redis=parse_redis(top.get("redis", {})),
        memory=parse_budgets(top.get("memory", {})),
        scaling=parse_scaling(top.get("scaling", {})),
        llama_server=llama_server,
    )


def _parse_health(raw: Any) -> HealthConfig:
    section = mapping(raw, "health")
    reject_unknown(section, keys(HealthConfig), "health.")
    return HealthConfig(**scalars(section, HealthConfig, _HEALTH_SETTINGS, "health."))


def _parse_server(raw: Any) -> ServerConfig:
    section = mapping(raw, "server")
    if "api_keys" in section:
        raise ConfigError(
            "server.api_keys: replaced by auth.keys, named keys stored as a hash (key_sha256) or "
            "read from the environment (key_env); `llm-gateway keygen --name NAME` prints a key "
            'and its lines (docs/operations.md "API keys")'
        )
    reject_unknown(section, _SERVER_KEYS, "server.")
    return ServerConfig(
        **scalars(section, ServerConfig, _SERVER_SETTINGS, "server."),
        allowed_hosts=parse_allowed_hosts(section.get("allowed_hosts")),
        cors=parse_cors(section.get("cors")),
        forwarded_allow_ips=parse_forwarded_allow_ips(section.get("forwarded_allow_ips")),
    )


def _parse_model(
    raw: Any, index: int, base_dir: Path, llama_server: LlamaServerConfig
) -> ModelConfig:
    section = mapping(raw, f"models[{index}]")
    name = section.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"models[{index}].name: expected a non-empty string")
    where = f"models[{index}] ({name})."
    reject_unknown(section, _MODEL_KEYS, where)
    settings = scalars(section, ModelConfig, _MODEL_SETTINGS, where)
    engine = settings["engine"]
    upstreams = parse_upstreams(section.get("upstreams", []), where, base_dir)
    span = parse_replica_range(section, bool(upstreams), where)
    replicas = span.max
    auto = section.get("gpus") == "auto"
    llama = _parse_params(section.get("llama", {}), LLAMA_PARAMS, where + "llama")
    return ModelConfig(
        **settings,
        capacity=_parse_capacity(section, engine, where),
        name=name,
        aliases=_parse_aliases(section.get("aliases", []), where),
        path=_parse_path(section.get("path"), engine if replicas else "remote", where, base_dir),
        replicas=replicas,
        gpus=None if auto else _parse_gpus(section.get("gpus"), replicas, where),
        gpus_auto=auto,
        min_replicas=span.min,
        idle_ttl=_optional_seconds(section, "idle_ttl", where),
        memory=None if "memory" not in section else parse_size(section["memory"], where + "memory"),
        llama=llama,
        standin=_parse_params(section.get("standin", {}), STANDIN_PARAMS, where + "standin"),
        upstreams=upstreams,
        outlier=_parse_outlier(section.get("outlier", {}), where + "outlier"),
        **_engine_fields(section, llama, replicas > 0, llama_server, where),
    )


def _engine_fields(
    section: dict[str, Any],
    llama: Mapping[str, Any],
    local: bool,
    llama_server: LlamaServerConfig,
    where: str,
) -> dict[str, Any]:
    """A llama-server model's own fields (its binary, only where it runs replicas here);
    `server_args` on another engine, or a worker option llama-server lacks, is an error."""
    engine = section.get("engine", "llama")
    if engine != "llama-server":
        if "server_args" in section:
            raise ConfigError(f"{where}server_args: only for engine: llama-server")
        return {}
    check_server_llama(llama, where + "llama")
    for key in ("matryoshka", "accept_token_ids"):
        if section.get(key):
            raise ConfigError(f"{where}{key}: our worker's option; llama-server has none")
    binary = locate_binary(llama_server) if local else None
    if local and binary is None:
        raise missing_binary(where)
    return {
        "server_args": parse_server_args(section.get("server_args", []), where),
        "server_binary": binary,
        "unserved": unserved_paths(section["name"], engine, llama),
    }


def _parse_outlier(raw: Any, where: str) -> OutlierConfig:
    section, at = mapping(raw, where), where + "."
    reject_unknown(section, keys(OutlierConfig), at)
    config = OutlierConfig(**scalars(section, OutlierConfig, _OUTLIER_SETTINGS, at))
    if config.max_ejection_time < config.base_ejection_time:
        raise ConfigError(
            f"{at}max_ejection_time: expected seconds >= base_ejection_time "
            f"({config.base_ejection_time:g})"
        )
    return config


def _optional_seconds(section: dict[str, Any], key: str, where: str) -> float | None:
    value = checked(section, key, lambda v: v is None or pos_num(v), "seconds > 0", where, None)
    return None if value is None else float(value)


# `capacity: auto`, the default: a llama model that generates gets llama-server's own `-np
# auto`, 4 slots over one copy of the weights (one copy then serves 4 clients at the speed of
# llama-server; docs/engines.md "Slots"); an embedding model and a stand-in serve one request
# at a time.
AUTO_CAPACITY = 4


def _parse_capacity(section: dict[str, Any], engine: str, where: str) -> int:
    llama = section.get("llama")
    embedding = isinstance(llama, dict) and bool(llama.get("embedding"))
    if section.get("capacity", "auto") == "auto":
        return AUTO_CAPACITY if engine in GGUF_ENGINES and not embedding else 1
    capacity: int = checked(section, "capacity", positive, "a positive integer or auto", where, 1)
    if engine == "llama" and capacity > 1 and embedding:
        raise ConfigError(
            f"{where}capacity: an embedding model serves one request at a time (slots batch "
            "generation); use replicas for parallelism"
        )
    return capacity


def _parse_aliases(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(nonempty_str(a) for a in raw):
        raise ConfigError(f"{where}aliases: expected a list of non-empty strings")
    return tuple(raw)


def _parse_path(raw: Any, engine: str, where: str, base_dir: Path) -> Path | None:
    if raw is None and engine in ("standin", "remote"):  # remote: no local replica loads it
        return None
    if not nonempty_str(raw):
        raise ConfigError(f"{where}path: expected the path of a GGUF file")
    path = Path(expand_env(raw, where + "path")).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if engine in GGUF_ENGINES and not path.is_file():
        raise ConfigError(f"{where}path: model file not found: {path}")
    return path


def _parse_gpus(raw: Any, replicas: int, where: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(_gpu_spec(g) for g in raw):
        raise ConfigError(
            f"{where}gpus: expected auto, or a list of GPU ids, one per replica, like [0, 1] "
            'or ["0,1", "2"]'
        )
    if len(raw) != replicas:
        raise ConfigError(f"{where}gpus: has {len(raw)} entries but replicas is {replicas}")
    return tuple(str(g).replace(" ", "") for g in raw)


def _gpu_spec(v: Any) -> bool:
    if non_negative(v):
        return True
    parts = str(v).replace(" ", "").split(",") if isinstance(v, str) else []
    return bool(parts) and all(p.isdigit() for p in parts)


def _parse_params(
    raw: Any, table: Mapping[str, tuple[Check, str]], where: str
) -> Mapping[str, Any]:
    section = mapping(raw, where)
    for key, value in section.items():
        if key not in table:
            known = ", ".join(sorted(table))
            raise ConfigError(f"{where}.{key_shown(key)}: unknown key (known: {known})")
        check, expected = table[key]
        if not check(value):
            raise ConfigError(f"{where}.{key}: expected {expected}, got {shown(value)}")
    return MappingProxyType(dict(section))


def _reject_duplicate_names(models: tuple[ModelConfig, ...]) -> None:
    seen: dict[str, int] = {}
    for index, model in enumerate(models):
        for name in model.names:
            if name in seen:
                raise ConfigError(
                    f"models[{index}] ({model.name}): name or alias '{name}' is already "
                    f"used by models[{seen[name]}]"
                )
            seen[name] = index
