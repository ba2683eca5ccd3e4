"""How much memory one replica needs, and on which devices, estimated before it loads.

Weights are the GGUF file's size; the KV cache comes from its metadata (layers, KV heads, key and
value sizes) times the context the replica gets (n_ctx per slot x slots) and the cache type
(`type_k`/`type_v`, f16 by default); llama.cpp's compute buffers and the worker process add a
measured overhead. With `n_gpu_layers` of a model's layers offloaded, that share of weights and
cache is on the replica's GPUs (split evenly across them), the rest in RAM.

The header is read by workers/gguf_header.py (milliseconds, where `gguf.GGUFReader` takes
seconds); the cache types' sizes come from the `gguf` package's tables.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from workers.gguf_header import Strings, gguf_metadata

from ..config.file import ModelConfig
from .launch import llama_params

__all__ = ["Footprint", "estimate", "needs"]

# Fitted to the demo models' resident memory after a 300-token prompt (docs/scaling.md "On-demand
# replicas": within 2-8% above it): a worker process (Python, aiohttp, llama.cpp's library), or
# llama.cpp's own llama-server (C++ alone), and llama.cpp's compute and output buffers, which
# grow with the vocabulary.
PROCESS_BYTES = 96 << 20
SERVER_PROCESS_BYTES = 24 << 20
COMPUTE_BYTES = 16 << 20
COMPUTE_BYTES_PER_TOKEN = 192  # per vocabulary entry
DEFAULT_N_CTX = 512  # llama_cpp.Llama's default


@dataclass(frozen=True)
class Footprint:
    """One replica's memory: what moves to its GPUs with offloaded layers, and what stays."""

    weights: int
    kv_cache: int
    compute: int  # llama.cpp's compute and output buffers
    gpu_share: float  # the fraction of layers offloaded: 0 on CPU, 1 with every layer
    process: int = PROCESS_BYTES  # the process itself: our worker's, or llama-server's

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.process

    def split(self, device: str) -> dict[str, int]:
        """Bytes per budget: "cpu" and each GPU id in `device` ("0", "0,1"; "cpu" for none)."""
        gpus = [] if device == "cpu" else device.split(",")
        share = self.gpu_share if gpus else 0.0
        layered = self.weights + self.kv_cache
        on_gpus = int(layered * share) + (self.compute if gpus and share else 0)
        result = {"cpu": self.total - on_gpus}
        for gpu in gpus:
            result[gpu] = result.get(gpu, 0) + on_gpus // len(gpus)
        return result


def needs(model: ModelConfig, device: str) -> dict[str, int]:
    """Bytes one replica of `model` on `device` takes from each device's budget."""
    if model.memory is not None:  # set by hand: on its GPUs (split evenly), else in RAM
        gpus = [] if device == "cpu" else device.split(",")
        return {gpu: model.memory // len(gpus) for gpu in gpus} or {"cpu": model.memory}
    if not model.loads_gguf or model.path is None:
        return {}  # a stand-in loads nothing; a remote replica's memory is elsewhere
    return estimate(model, on_gpu=device != "cpu").split(device)


def estimate(model: ModelConfig, on_gpu: bool) -> Footprint:
    """`model`'s footprint per replica, from its GGUF file and llama settings."""
    assert model.path is not None
    try:
        meta = gguf_metadata(model.path)
    except (OSError, ValueError, struct.error):  # not a GGUF we can read: its weights alone
        meta = {}
    params = llama_params(model, "GPU" if on_gpu else "cpu")
    params["n_gpu_layers"] = params["n_gpu_layers"] if on_gpu else 0  # Metal: RAM all the same
    layers = int(_arch(meta, "block_count", 1))
    offloaded = int(params.get("n_gpu_layers", 0))
    share = 1.0 if offloaded < 0 else min(offloaded, layers) / layers
    n_ctx = int(params.get("n_ctx", DEFAULT_N_CTX)) or int(_arch(meta, "context_length", 2048))
    cells = n_ctx * model.capacity  # a batching worker's slots each have n_ctx
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = tokens.entries if isinstance(tokens, Strings) else 0
    return Footprint(
        model.path.stat().st_size,
        _kv_bytes(meta, params, layers, cells),
        COMPUTE_BYTES + vocab * COMPUTE_BYTES_PER_TOKEN,
        share,
        PROCESS_BYTES if model.uses_worker else SERVER_PROCESS_BYTES,
    )


def _kv_bytes(meta: Mapping[str, Any], params: Mapping[str, Any], layers: int, cells: int) -> int:
    heads = int(_arch(meta, "attention.head_count", 1))
    kv_heads = int(_arch(meta, "attention.head_count_kv", heads))
    head_size = int(_arch(meta, "embedding_length", heads)) // heads
    key = int(_arch(meta, "attention.key_length", head_size))
    value = int(_arch(meta, "attention.value_length", head_size))
    per_cell = kv_heads * (
        key * _type_bytes(params.get("type_k")) + value * _type_bytes(params.get("type_v"))
    )
    return int(layers * cells * per_cell)


def _type_bytes(ggml_type: int | None) -> float:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(1 if ggml_type is None else ggml_type)]
    return size / block


def _arch(meta: Mapping[str, Any], key: str, default: Any) -> Any:
    return meta.get(f"{meta.get('general.architecture', 'llama')}.{key}", default)
