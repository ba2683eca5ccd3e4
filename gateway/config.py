"""config.yaml, parsed once into frozen dataclasses; every error names the bad key."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "LLAMA_PARAMS",
    "ConfigError",
    "GatewayConfig",
    "HealthConfig",
    "ModelConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """An invalid config file; the message names the key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    drain_timeout: float = 30.0
    # The HTTP connection's limits (gateway/edge.py); the body timeout is between two chunks.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 2048
    max_header_bytes: int = 16384
    max_url_bytes: int = 8192


@dataclass(frozen=True)
class HealthConfig:
    """How the supervisor checks a running worker's /status."""

    interval: float = 2.0  # seconds between checks
    timeout: float = 5.0  # seconds a check may take: a busy worker on a loaded host is slow
    failures: int = 3  # failed checks in a row before the worker is killed and restarted


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path | None
    aliases: tuple[str, ...] = ()
    engine: str = "llama"
    replicas: int = 1
    capacity: int = 1  # requests one replica serves at once (a llama.cpp context: 1)
    gpus: tuple[str, ...] | None = None
    max_queue: int = 64
    queue_timeout: float = 30.0
    startup_timeout: float = 300.0
    first_token_timeout: float = 300.0
    idle_timeout: float = 60.0
    llama: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    standin: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def device(self, index: int) -> str | None:
        """The CUDA_VISIBLE_DEVICES value of replica `index`, or None for CPU."""
        return None if self.gpus is None else self.gpus[index]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    models: tuple[ModelConfig, ...]
    health: HealthConfig = HealthConfig()
    watch: bool = False  # reload when the file changes

    def model_by_name(self) -> dict[str, ModelConfig]:
        """Every name and alias mapped to its model."""
        return {name: model for model in self.models for name in model.names}


Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _positive(v: Any) -> bool:
    return _is_int(v) and v > 0


def _non_negative(v: Any) -> bool:
    return _is_int(v) and v >= 0


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(_is_number(x) for x in v)


# The llama_cpp.Llama keyword arguments ops may set, each with what a valid value is.
LLAMA_PARAMS: Mapping[str, tuple[Check, str]] = MappingProxyType(
    {
        "n_ctx": (_positive, "a positive integer"),
        "n_batch": (_positive, "a positive integer"),
        "n_ubatch": (_positive, "a positive integer"),
        "n_threads": (_positive, "a positive integer"),
        "n_threads_batch": (_positive, "a positive integer"),
        "n_gpu_layers": (lambda v: _is_int(v) and v >= -1, "an integer >= -1 (-1: all layers)"),
        "main_gpu": (_non_negative, "a non-negative integer"),
        "split_mode": (_non_negative, "a non-negative integer"),
        "tensor_split": (_numbers, "a list of numbers"),
        "seed": (_is_int, "an integer"),
        "embedding": (_bool, "true or false"),
        "logits_all": (_bool, "true or false"),
        "pooling_type": (lambda v: _is_int(v) and -1 <= v <= 4, "an integer from -1 to 4"),
        "flash_attn": (_bool, "true or false"),
        "offload_kqv": (_bool, "true or false"),
        "use_mmap": (_bool, "true or false"),
        "use_mlock": (_bool, "true or false"),
        "chat_format": (_str, "a chat format name"),
        "rope_freq_base": (_is_number, "a number"),
        "rope_freq_scale": (_is_number, "a number"),
        "type_k": (_non_negative, "a non-negative integer"),
        "type_v": (_non_negative, "a non-negative integer"),
        "last_n_tokens_size": (_non_negative, "a non-negative integer"),
        "verbose": (_bool, "true or false"),
    }
)

STANDIN_PARAMS: Mapping[str, tuple[Check, str]] = MappingProxyType(
    {
        "token_delay": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
        "tokens": (_positive, "a positive integer"),
        "load_seconds": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
        "embedding_dim": (_non_negative, "an integer >= 0 (0: no embeddings)"),
        "n_ctx": (_positive, "a positive integer"),
        "n_vocab": (_positive, "a positive integer"),
        "fail_load": (_str, "an error message the load fails with"),
        "error_after_tokens": (_non_negative, "an integer >= 0"),
        "exit_after_tokens": (_non_negative, "an integer >= 0"),
        "crash_on_warmup": (_bool, "true or false"),
        "crash_on_request": (_bool, "true or false"),
        "prefill_seconds": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
    }
)

_SERVER_KEYS = {
    "host", "port", "api_keys", "max_body_bytes", "drain_timeout", "header_timeout",
    "body_timeout", "max_connections", "max_header_bytes", "max_url_bytes",
}  # fmt: skip
_MODEL_KEYS = {
    "name", "aliases", "path", "engine", "replicas", "capacity", "gpus", "max_queue",
    "queue_timeout", "startup_timeout", "first_token_timeout", "idle_timeout", "llama", "standin",
}  # fmt: skip
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
    top = _mapping(raw, "config file")
    _reject_unknown(top, {"server", "models", "health", "watch"}, "")
    server = _parse_server(top.get("server", {}))
    health = _parse_health(top.get("health", {}))
    models_raw = top.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError("models: expected a non-empty list of models")
    models = tuple(_parse_model(m, i, base_dir) for i, m in enumerate(models_raw))
    _reject_duplicate_names(models)
    watch = _get(top, "watch", _bool, "true or false", "", False)
    return GatewayConfig(server=server, models=models, health=health, watch=watch)


def _parse_health(raw: Any) -> HealthConfig:
    section = _mapping(raw, "health")
    _reject_unknown(section, {"interval", "timeout", "failures"}, "health.")
    return HealthConfig(
        interval=float(_get(section, "interval", _pos_num, "seconds > 0", "health.", 2.0)),
        timeout=float(_get(section, "timeout", _pos_num, "seconds > 0", "health.", 5.0)),
        failures=_get(section, "failures", _positive, "a positive integer", "health.", 3),
    )


def _parse_server(raw: Any) -> ServerConfig:
    section = _mapping(raw, "server")
    _reject_unknown(section, _SERVER_KEYS, "server.")
    return ServerConfig(
        host=_get(section, "host", _str, "a host name or address", "server.", "127.0.0.1"),
        port=_get(section, "port", _port, "a port number 0-65535", "server.", 8000),
        api_keys=_parse_api_keys(section.get("api_keys", [])),
        max_body_bytes=_get(
            section, "max_body_bytes", _positive, "a positive integer", "server.", 4 << 20
        ),
        drain_timeout=float(
            _get(section, "drain_timeout", _non_neg_num, "seconds >= 0", "server.", 30)
        ),
        header_timeout=float(
            _get(section, "header_timeout", _pos_num, "seconds > 0", "server.", 10)
        ),
        body_timeout=float(_get(section, "body_timeout", _pos_num, "seconds > 0", "server.", 30)),
        max_connections=_get(
            section, "max_connections", _positive, "a positive integer", "server.", 2048
        ),
        max_header_bytes=_get(
            section, "max_header_bytes", _positive, "a positive integer", "server.", 16384
        ),
        max_url_bytes=_get(
            section, "max_url_bytes", _positive, "a positive integer", "server.", 8192
        ),
    )


MIN_API_KEY_LENGTH = 16


def _parse_api_keys(raw: Any) -> tuple[str, ...]:
    """Keys a client may send; an empty or short one (an unset ${VAR}, say) is an error, since it
    would let a client in with an empty or guessable Bearer token."""
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise ConfigError("server.api_keys: expected a list of strings")
    keys = tuple(_expand_env(k, f"server.api_keys[{i}]").strip() for i, k in enumerate(raw))
    for index, key in enumerate(keys):
        if len(key) < MIN_API_KEY_LENGTH:
            raise ConfigError(
                f"server.api_keys[{index}]: a key must have at least {MIN_API_KEY_LENGTH} "
                f"characters (this one has {len(key)}; an environment variable set to '' "
                "gives an empty one)"
            )
    return keys


def _port(v: Any) -> bool:
    return _is_int(v) and 0 <= v <= 65535


def _parse_model(raw: Any, index: int, base_dir: Path) -> ModelConfig:
    section = _mapping(raw, f"models[{index}]")
    name = section.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"models[{index}].name: expected a non-empty string")
    where = f"models[{index}] ({name})."
    _reject_unknown(section, _MODEL_KEYS, where)
    engine = _get(section, "engine", lambda v: v in ("llama", "standin"), "llama or standin",
                  where, "llama")  # fmt: skip
    replicas = _get(section, "replicas", _positive, "a positive integer", where, 1)
    return ModelConfig(
        capacity=_parse_capacity(section, engine, where),
        name=name,
        aliases=_parse_aliases(section.get("aliases", []), where),
        path=_parse_path(section.get("path"), engine, where, base_dir),
        engine=engine,
        replicas=replicas,
        gpus=_parse_gpus(section.get("gpus"), replicas, where),
        max_queue=_get(section, "max_queue", _non_negative, "an integer >= 0", where, 64),
        queue_timeout=float(_get(section, "queue_timeout", _pos_num, "seconds > 0", where, 30)),
        startup_timeout=float(
            _get(section, "startup_timeout", _pos_num, "seconds > 0", where, 300)
        ),
        first_token_timeout=float(
            _get(section, "first_token_timeout", _pos_num, "seconds > 0", where, 300)
        ),
        idle_timeout=float(_get(section, "idle_timeout", _pos_num, "seconds > 0", where, 60)),
        llama=_parse_params(section.get("llama", {}), LLAMA_PARAMS, where + "llama"),
        standin=_parse_params(section.get("standin", {}), STANDIN_PARAMS, where + "standin"),
    )


def _non_neg_num(v: Any) -> bool:
    return _is_number(v) and v >= 0


def _pos_num(v: Any) -> bool:
    return _is_number(v) and v > 0


def _parse_capacity(section: dict[str, Any], engine: str, where: str) -> int:
    capacity: int = _get(section, "capacity", _positive, "a positive integer", where, 1)
    if engine == "llama" and capacity != 1:
        raise ConfigError(
            f"{where}capacity: a llama.cpp worker serves one request at a time; "
            "use replicas for parallelism"
        )
    return capacity


def _parse_aliases(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(_str(a) for a in raw):
        raise ConfigError(f"{where}aliases: expected a list of non-empty strings")
    return tuple(raw)


def _parse_path(raw: Any, engine: str, where: str, base_dir: Path) -> Path | None:
    if raw is None and engine == "standin":
        return None
    if not _str(raw):
        raise ConfigError(f"{where}path: expected the path of a GGUF file")
    path = Path(_expand_env(raw, where + "path")).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if engine == "llama" and not path.is_file():
        raise ConfigError(f"{where}path: model file not found: {path}")
    return path


def _parse_gpus(raw: Any, replicas: int, where: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(_gpu_spec(g) for g in raw):
        raise ConfigError(
            f'{where}gpus: expected a list of GPU ids, one per replica, like [0, 1] or ["0,1", "2"]'
        )
    if len(raw) != replicas:
        raise ConfigError(f"{where}gpus: has {len(raw)} entries but replicas is {replicas}")
    return tuple(str(g).replace(" ", "") for g in raw)


def _gpu_spec(v: Any) -> bool:
    if _non_negative(v):
        return True
    parts = str(v).replace(" ", "").split(",") if isinstance(v, str) else []
    return bool(parts) and all(p.isdigit() for p in parts)


def _parse_params(
    raw: Any, table: Mapping[str, tuple[Check, str]], where: str
) -> Mapping[str, Any]:
    section = _mapping(raw, where)
    for key, value in section.items():
        if key not in table:
            known = ", ".join(sorted(table))
            raise ConfigError(f"{where}.{key}: unknown key (known: {known})")
        check, expected = table[key]
        if not check(value):
            raise ConfigError(f"{where}.{key}: expected {expected}, got {_shown(value)}")
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


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{where}: expected a mapping of keys to values")
    return raw


def _reject_unknown(section: dict[str, Any], known: set[str], where: str) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(f"{where}{key}: unknown key (known: {', '.join(sorted(known))})")


def _get(section: dict[str, Any], key: str, check: Check, expected: str, where: str,
         default: Any) -> Any:  # fmt: skip
    value = section.get(key, default)
    if not check(value):
        raise ConfigError(f"{where}{key}: expected {expected}, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A bad value as an error may show it: numbers and booleans, never a string's text (a key
    or password put in the wrong place must not reach a log or an admin reply)."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _expand_env(text: str, where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise ConfigError(f"{where}: environment variable {match.group(1)} is not set")
        return value

    return _ENV_VAR.sub(substitute, text)
