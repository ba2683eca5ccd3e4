"""What each worker is given (command line, GPU pinning, llama params) and how its end is told."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.config.file import ModelConfig
from gateway.replicas.launch import (
    crash_reason,
    describe_exit,
    llama_params,
    worker_command,
    worker_env,
    worker_secret,
)
from gateway.replicas.local_driver import restart_delay
from workers.wire import SECRET_ENV


def model(**kw: object) -> ModelConfig:
    return ModelConfig(name="m", path=Path("/models/m.gguf"), **kw)  # type: ignore[arg-type]


def test_a_replica_sees_only_its_devices_gpus() -> None:
    assert worker_env("0", {})["CUDA_VISIBLE_DEVICES"] == "0"
    assert worker_env("2,3", {"CUDA_VISIBLE_DEVICES": "0"})["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_cpu_replicas_see_no_gpu() -> None:
    assert worker_env("cpu", {"CUDA_VISIBLE_DEVICES": "0"})["CUDA_VISIBLE_DEVICES"] == ""


def test_gpu_replicas_offload_all_layers_unless_told_otherwise() -> None:
    assert llama_params(model(gpus=("0",)), "0")["n_gpu_layers"] == -1
    assert llama_params(model(gpus=("0",), llama={"n_gpu_layers": 10}), "0")["n_gpu_layers"] == 10
    assert llama_params(model(llama={"n_gpu_layers": -1}))["n_gpu_layers"] == -1  # Metal
    assert llama_params(model())["n_gpu_layers"] == 0


def test_worker_command_carries_model_port_parent_and_params() -> None:
    command = worker_command(
        model(llama={"n_ctx": 512}), port=9001, parent_pid=os.getpid(), replica=2
    )
    assert command[1:3] == ["-m", "workers"]
    args = dict(zip(command[3::2], command[4::2], strict=False))
    assert args["--port"] == "9001" and args["--parent-pid"] == str(os.getpid())
    assert args["--model-path"] == "/models/m.gguf"
    assert args["--replica"] == "2"  # its log lines say which replica they come from
    assert json.loads(args["--llama-json"]) == {"n_ctx": 512, "n_gpu_layers": 0}


def test_restart_backoff_doubles_and_is_capped() -> None:
    assert [restart_delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(20) == 30.0


def test_worker_command_passes_the_phase_pipe_when_given() -> None:
    command = worker_command(model(), port=9001, parent_pid=1, phase_fd=7, replica=0)
    assert command[command.index("--phase-fd") + 1] == "7"
    assert "--phase-fd" not in worker_command(model(), port=9001, parent_pid=1, replica=0)


def test_every_exit_is_named_by_its_code_or_signal() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-11) == "SIGSEGV, signal 11"
    assert describe_exit(-9) == "SIGKILL, signal 9"
    assert describe_exit(-200) == "unknown signal, signal 200"
    assert describe_exit(None) == "still running"


def test_a_native_crash_before_ready_names_the_phase_and_points_at_cpu_builds() -> None:
    assert crash_reason("warming_up", -11) == (
        "worker crashed during warm-up (SIGSEGV, signal 11) - see docs/builds.md"
    )
    assert crash_reason("loading", -4) == (
        "worker crashed while loading the model (SIGILL, signal 4) - see docs/builds.md"
    )
    # Killed (e.g. by the OOM killer) or a plain exit: no build hint.
    assert crash_reason("warming_up", -9) == "worker crashed during warm-up (SIGKILL, signal 9)"
    assert crash_reason("loading", 1) == "worker exited while loading the model (exit code 1)"


def test_each_worker_gets_a_fresh_random_secret_unless_the_gateway_was_given_one() -> None:
    secrets = {worker_secret({}) for _ in range(5)}
    assert len(secrets) == 5 and all(len(s) >= 40 for s in secrets)
    assert worker_secret({SECRET_ENV: "fixed-secret"}) == "fixed-secret"
    assert worker_secret({SECRET_ENV: ""}) not in ("", "fixed-secret")  # empty: random


def test_a_model_s_embedding_policy_reaches_its_workers() -> None:
    plain = worker_command(model(), port=9001, parent_pid=1, replica=0)
    assert "--matryoshka" not in plain and "--accept-token-ids" not in plain
    both = worker_command(
        model(matryoshka=True, accept_token_ids=True), port=9001, parent_pid=1, replica=0
    )
    assert "--matryoshka" in both and "--accept-token-ids" in both
