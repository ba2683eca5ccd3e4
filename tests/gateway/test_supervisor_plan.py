"""What each worker is given: its command line, its GPU pinning and its llama params."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.config import ModelConfig
from gateway.supervisor import llama_params, restart_delay, worker_command, worker_env


def model(**kw: object) -> ModelConfig:
    return ModelConfig(name="m", path=Path("/models/m.gguf"), **kw)  # type: ignore[arg-type]


def test_replica_i_is_pinned_to_gpus_i() -> None:
    m = model(replicas=2, gpus=("0", "2,3"))
    assert worker_env(m, 0, {})["CUDA_VISIBLE_DEVICES"] == "0"
    assert worker_env(m, 1, {})["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_cpu_replicas_see_no_gpu() -> None:
    assert worker_env(model(), 0, {"CUDA_VISIBLE_DEVICES": "0"})["CUDA_VISIBLE_DEVICES"] == ""


def test_gpu_replicas_offload_all_layers_unless_told_otherwise() -> None:
    assert llama_params(model(gpus=("0",)))["n_gpu_layers"] == -1
    assert llama_params(model(gpus=("0",), llama={"n_gpu_layers": 10}))["n_gpu_layers"] == 10
    assert llama_params(model())["n_gpu_layers"] == 0


def test_worker_command_carries_model_port_parent_and_params() -> None:
    command = worker_command(model(llama={"n_ctx": 512}), port=9001, parent_pid=os.getpid())
    assert command[1:3] == ["-m", "workers"]
    args = dict(zip(command[3::2], command[4::2], strict=False))
    assert args["--port"] == "9001" and args["--parent-pid"] == str(os.getpid())
    assert args["--model-path"] == "/models/m.gguf"
    assert json.loads(args["--llama-json"]) == {"n_ctx": 512, "n_gpu_layers": 0}


def test_restart_backoff_doubles_and_is_capped() -> None:
    assert [restart_delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(20) == 30.0
