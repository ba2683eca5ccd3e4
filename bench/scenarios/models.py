"""The real models of scenarios 4-5, and the gateway / llama-cpp-python server configs for them."""

from __future__ import annotations

from typing import Any

from ..procs import ROOT

__all__ = ["GEMMA", "N_CTX", "SMOLLM", "gateway_model", "server_model"]

SMOLLM = ("smollm2", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = ("gemma3-270m", ROOT / "models" / "gemma-3-270m-q4_k_m.gguf")
N_CTX = 2048


def gateway_model(model: tuple[str, Any], replicas: int, threads: int) -> dict[str, Any]:
    name, path = model
    llama = {"n_ctx": N_CTX, "n_threads": threads, "n_threads_batch": threads}
    return {
        "name": name,
        "path": str(path),
        "replicas": replicas,
        "llama": llama,
        "max_queue": 1000,
        "queue_timeout": 300,
    }


def server_model(model: tuple[str, Any], threads: int) -> dict[str, Any]:
    name, path = model
    return {
        "model": str(path),
        "model_alias": name,
        "n_ctx": N_CTX,
        "n_threads": threads,
        "n_threads_batch": threads,
        "verbose": False,
    }
