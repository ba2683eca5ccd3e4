"""`engine: llama-server`: llama.cpp's own server run as a replica, and where its binary is.

A model's `llama:` options become llama-server flags where llama-server has one (`SERVER_FLAGS`);
one it has no equivalent for is a config error naming the key, so a setting is never silently
dropped. `server_args` adds flags of the model's own, after ours (the last one of a flag wins).
The binary is `llama_server.binary`, else `llama-server` on PATH, else the one `make
llama-server` builds into `.llama-server/bin/` beside the gateway package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .checks import ConfigError, expand_env, mapping, nonempty_str, reject_unknown, shown

__all__ = [
    "BUILT_BINARY",
    "ENGINES",
    "GGUF_ENGINES",
    "SERVER_FLAGS",
    "LlamaServerConfig",
    "check_server_llama",
    "locate_binary",
    "missing_binary",
    "parse_llama_server",
    "parse_server_args",
    "unserved_paths",
]

ENGINES = ("llama", "llama-server", "standin")
GGUF_ENGINES = ("llama", "llama-server")  # those whose replicas load the model's GGUF file
# Where `make llama-server` (deploy/build_llama_server.sh) puts it: beside the gateway package.
BUILT_BINARY = Path(__file__).resolve().parents[2] / ".llama-server" / "bin" / "llama-server"


@dataclass(frozen=True)
class LlamaServerConfig:
    """The top-level `llama_server:` section."""

    binary: Path | None = None  # llama.cpp's llama-server; None: on PATH, or `make`'s build


_KEYS = frozenset(f.name for f in fields(LlamaServerConfig))


def parse_llama_server(raw: Any, base_dir: Path) -> LlamaServerConfig:
    section = mapping(raw, "llama_server")
    reject_unknown(section, _KEYS, "llama_server.")
    given = section.get("binary")
    if given is None:
        return LlamaServerConfig()
    if not nonempty_str(given):
        raise ConfigError("llama_server.binary: expected the path of llama.cpp's llama-server")
    path = Path(expand_env(given, "llama_server.binary")).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not _executable(path):
        raise ConfigError(f"llama_server.binary: no executable file at {path}")
    return LlamaServerConfig(binary=path)


def locate_binary(config: LlamaServerConfig) -> Path | None:
    """The llama-server a replica runs: the configured one, else on PATH, else make's."""
    if config.binary is not None:
        return config.binary
    found = shutil.which("llama-server")
    if found is not None:
        return Path(found)
    return BUILT_BINARY if _executable(BUILT_BINARY) else None


def missing_binary(where: str) -> ConfigError:
    return ConfigError(
        f"{where}engine: llama-server needs llama.cpp's llama-server: set llama_server.binary, "
        "put it on PATH, or run `make llama-server`"
    )


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def parse_server_args(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(arg, str) for arg in raw):
        raise ConfigError(f'{where}server_args: expected a list of strings, like ["--jinja"]')
    return tuple(raw)


# What each flag's value means to llama-server (its --help names them).
_SPLIT_MODES = {0: "none", 1: "layer", 2: "row"}
_POOLINGS = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
# ggml type ids (llama_cpp's `type_k`/`type_v`) of the KV cache types llama-server accepts.
_CACHE_TYPES = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    6: "q5_0",
    7: "q5_1",
    8: "q8_0",
    20: "iq4_nl",
    30: "bf16",
}

Flags = Callable[[Any], list[str] | None]  # a value's flags; None: llama-server cannot take it


def _valued(flag: str) -> Flags:
    return lambda value: [flag, str(value)]


def _named(flag: str, names: Mapping[int, str]) -> Flags:
    return lambda value: [flag, names[value]] if value in names else None


# llama options -> llama-server flags. Not here: n_ctx (per slot: `-c` is n_ctx x capacity),
# use_mmap and use_mlock (one `--load-mode` together), mapped where the command is built.
SERVER_FLAGS: Mapping[str, Flags] = MappingProxyType(
    {
        "n_batch": _valued("-b"),
        "n_ubatch": _valued("-ub"),
        "n_threads": _valued("-t"),
        "n_threads_batch": _valued("-tb"),
        "n_gpu_layers": lambda value: ["-ngl", "all" if value < 0 else str(value)],
        "main_gpu": _valued("-mg"),
        "split_mode": _named("-sm", _SPLIT_MODES),
        "tensor_split": lambda value: ["-ts", ",".join(str(share) for share in value)],
        "seed": _valued("-s"),
        "embedding": lambda value: ["--embeddings"] if value else [],
        "pooling_type": lambda value: [] if value == -1 else ["--pooling", _POOLINGS[value]],
        "flash_attn": lambda value: ["-fa", "on" if value else "off"],
        "offload_kqv": lambda value: [] if value else ["--no-kv-offload"],
        "kv_unified": lambda value: ["--kv-unified" if value else "--no-kv-unified"],
        "rope_freq_base": _valued("--rope-freq-base"),
        "rope_freq_scale": _valued("--rope-freq-scale"),
        "type_k": _named("-ctk", _CACHE_TYPES),
        "type_v": _named("-ctv", _CACHE_TYPES),
        "last_n_tokens_size": _valued("--repeat-last-n"),
    }
)
_BUILT_TOGETHER = frozenset({"n_ctx", "use_mmap", "use_mlock"})
_NO_EQUIVALENT = {
    "logits_all": "llama-server computes logprobs without it",
    "chat_format": 'give it a template instead: server_args: ["--chat-template", NAME]',
    "verbose": 'its log is kept by the gateway; server_args: ["-lv", "4"] sets its verbosity',
}


def check_server_llama(llama: Mapping[str, Any], where: str) -> None:
    """Every llama option of a llama-server model (already type-checked) has a flag there."""
    for key, value in llama.items():
        if key in _BUILT_TOGETHER:
            continue
        if key not in SERVER_FLAGS:
            why = _NO_EQUIVALENT.get(key, "pass its flag in server_args")
            raise ConfigError(f"{where}.{key}: llama-server has no equivalent ({why})")
        if SERVER_FLAGS[key](value) is None:
            raise ConfigError(f"{where}.{key}: llama-server cannot take {shown(value)} here")


def unserved_paths(name: str, engine: str, llama: Mapping[str, Any]) -> Mapping[str, str]:
    """The API paths a model's engine cannot serve, each with why (the 400 a request gets);
    llama-server without `--embeddings` answers embeddings with a 501 of its own."""
    if engine != "llama-server" or llama.get("embedding"):
        return MappingProxyType({})
    why = (
        f"Model '{name}' runs on llama-server, which serves /v1/embeddings only for a model "
        "with `embedding: true` in its llama options."
    )
    return MappingProxyType({"/v1/embeddings": why})
