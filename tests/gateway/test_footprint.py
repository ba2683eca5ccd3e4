"""The memory estimate of a replica, from the real demo GGUF files' headers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gateway.config.file import ModelConfig, parse_config
from gateway.replicas.footprint import (
    COMPUTE_BYTES,
    COMPUTE_BYTES_PER_TOKEN,
    PROCESS_BYTES,
    SERVER_PROCESS_BYTES,
    estimate,
    needs,
)
from tests.support import GEMMA3, SMOLLM2
from workers.gguf_header import Strings, gguf_metadata

MiB = 1 << 20


def model(path: Path = SMOLLM2, **fields: Any) -> ModelConfig:
    """One replica of one slot unless said otherwise (the default is `capacity: auto`)."""
    entry = {"name": "m", "path": str(path), "capacity": 1, **fields}
    (parsed,) = parse_config({"models": [entry]}, base_dir=Path.cwd()).models
    return parsed


def test_the_header_is_read_without_the_tokenizer_in_milliseconds() -> None:
    gguf_metadata.cache_clear()
    began = time.perf_counter()
    meta = gguf_metadata(GEMMA3)
    assert time.perf_counter() - began < 1.0  # gguf.GGUFReader takes seconds on this file
    assert meta["general.architecture"] == "gemma3"
    assert (meta["gemma3.block_count"], meta["gemma3.attention.head_count_kv"]) == (18, 1)
    assert meta["tokenizer.ggml.tokens"] == Strings(262144, 48)  # strings: count and longest


def test_the_kv_cache_follows_layers_heads_context_slots_and_cache_type() -> None:
    # SmolLM2: 30 layers, 3 KV heads of 64 (576 / 9 heads), f16: 768 bytes a cell and layer.
    assert estimate(model(llama={"n_ctx": 2048}), on_gpu=False).kv_cache == 30 * 2048 * 768
    assert estimate(model(llama={"n_ctx": 2048}, capacity=4), on_gpu=False).kv_cache == (
        4 * 30 * 2048 * 768
    )
    q8 = estimate(model(llama={"n_ctx": 2048, "type_k": 8, "type_v": 8}), on_gpu=False)
    assert q8.kv_cache == 30 * 2048 * 3 * 128 * 34 // 32  # q8_0: 34 bytes per 32 values
    # Gemma 3: explicit key/value lengths of 256, 1 KV head, 18 layers.
    assert estimate(model(GEMMA3, llama={"n_ctx": 1024}), False).kv_cache == 18 * 1024 * 1024


def test_a_cpu_replica_needs_it_all_in_ram() -> None:
    smol = model(llama={"n_ctx": 2048})
    weights, kv = SMOLLM2.stat().st_size, 30 * 2048 * 768
    compute = COMPUTE_BYTES + 49152 * COMPUTE_BYTES_PER_TOKEN
    assert needs(smol, "cpu") == {"cpu": weights + kv + compute + PROCESS_BYTES}


def test_offloaded_layers_count_on_the_gpus_split_evenly() -> None:
    full = needs(model(llama={"n_ctx": 2048}), "0,1")
    assert full["cpu"] == PROCESS_BYTES and full["0"] == full["1"] > 60 * MiB
    half = needs(model(llama={"n_ctx": 2048, "n_gpu_layers": 15}), "0")  # of 30 layers
    layered = SMOLLM2.stat().st_size + 30 * 2048 * 768
    compute = COMPUTE_BYTES + 49152 * COMPUTE_BYTES_PER_TOKEN
    assert half == {"0": layered // 2 + compute, "cpu": layered - layered // 2 + PROCESS_BYTES}


def test_a_models_own_memory_replaces_the_estimate() -> None:
    assert needs(model(memory="1GiB"), "cpu") == {"cpu": 1 << 30}
    assert needs(model(memory="1GiB"), "2,3") == {"2": 1 << 29, "3": 1 << 29}


def test_a_file_that_is_not_gguf_counts_its_size(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model" * 100)
    assert estimate(model(fake), on_gpu=False).weights == 1100
    assert needs(model(fake, engine="standin"), "cpu") == {}  # a stand-in loads nothing


def test_a_llama_server_replica_is_estimated_as_ours_but_for_its_lighter_process() -> None:
    ours = model(llama={"n_ctx": 1024}, capacity=2)
    server = model(llama={"n_ctx": 1024}, capacity=2, engine="llama-server")
    assert needs(server, "cpu")["cpu"] == needs(ours, "cpu")["cpu"] - PROCESS_BYTES + (
        SERVER_PROCESS_BYTES
    )
    assert needs(server, "0")["0"] == needs(ours, "0")["0"] > 100 * MiB  # on its GPU alike
