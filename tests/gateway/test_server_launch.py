"""`engine: llama-server`: the command a replica is started with, its metrics read as ours, and a
start that fails (the real llama-server binary) saying why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.config.file import ModelConfig, parse_config
from gateway.replicas.registry import Registry, ReplicaState
from gateway.replicas.server_launch import API_KEY_ENV, server_command
from gateway.replicas.server_metrics import engine_counters
from gateway.replicas.supervisor import Supervisor
from tests.support import SMOLLM2

# What this build's llama-server answers on /metrics after some requests (two slots busy
# together half the time).
METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 62
llamacpp:prompt_seconds_total 0.8
llamacpp:tokens_predicted_total 10
llamacpp:tokens_predicted_seconds_total 0.4
llamacpp:n_decode_total 40
llamacpp:n_tokens_max 35
llamacpp:requests_processing 0
llamacpp:n_busy_slots_per_decode 1.5
"""


def model(**entry: Any) -> ModelConfig:
    raw = {"name": "m", "engine": "llama-server", "path": str(SMOLLM2), **entry}
    return parse_config({"models": [raw]}, base_dir=Path.cwd()).models[0]


def flags(command: list[str]) -> dict[str, str]:
    """Each flag of `command` with the value after it ("" for a switch)."""
    found: dict[str, str] = {}
    for at, word in enumerate(command):
        if word.startswith("-"):
            after = command[at + 1] if at + 1 < len(command) else ""
            found[word] = "" if after.startswith("-") else after
    return found


def test_each_slot_gets_n_ctx_of_its_own_as_with_our_worker() -> None:
    command = server_command(model(capacity=3, llama={"n_ctx": 1024, "n_threads": 2}), 8123)
    given = flags(command)
    assert command[0].endswith("llama-server")
    assert given["-np"] == "3" and given["-c"] == "3072" and "--no-kv-unified" in given
    assert given["--port"] == "8123" and given["--host"] == "127.0.0.1"
    assert given["-a"] == "m" and given["-m"] == str(SMOLLM2) and given["-t"] == "2"
    assert "--metrics" in given and given["--cache-ram"] == "0"
    assert not any(API_KEY_ENV in word or "api-key" in word for word in command)  # not for ps
    assert flags(server_command(model(), 1))["-c"] == str(4 * 512)  # llama_cpp's default


def test_gpu_replicas_offload_every_layer_and_cpu_ones_none() -> None:
    assert flags(server_command(model(), 1, "0"))["-ngl"] == "all"
    assert flags(server_command(model(), 1, "cpu"))["-ngl"] == "0"
    assert flags(server_command(model(llama={"n_gpu_layers": 7}), 1, "0"))["-ngl"] == "7"


def test_llama_options_become_llama_server_flags() -> None:
    llama = {
        "n_batch": 256,
        "n_ubatch": 128,
        "flash_attn": False,
        "type_k": 8,
        "type_v": 30,
        "offload_kqv": False,
        "use_mmap": False,
        "kv_unified": True,
        "seed": 7,
        "split_mode": 2,
        "tensor_split": [0.5, 0.5],
        "rope_freq_base": 10000.0,
        "last_n_tokens_size": 32,
    }
    given = flags(server_command(model(llama=llama), 1, "0,1"))
    assert {
        key: given[key]
        for key in (
            "-b",
            "-ub",
            "-fa",
            "-ctk",
            "-ctv",
            "-lm",
            "-s",
            "-sm",
            "-ts",
            "--rope-freq-base",
            "--repeat-last-n",
        )
    } == {
        "-b": "256",
        "-ub": "128",
        "-fa": "off",
        "-ctk": "q8_0",
        "-ctv": "bf16",
        "-lm": "none",
        "-s": "7",
        "-sm": "row",
        "-ts": "0.5,0.5",
        "--rope-freq-base": "10000.0",
        "--repeat-last-n": "32",
    }
    assert "--no-kv-offload" in given and "--kv-unified" in given
    assert "-fa" not in flags(server_command(model(), 1))  # unset: llama-server's auto


def test_an_embedding_model_pools_by_mean_unless_told_and_server_args_come_last() -> None:
    embed = server_command(model(llama={"embedding": True}, server_args=["-ub", "2048"]), 1)
    assert "--embeddings" in embed and flags(embed)["--pooling"] == "mean"
    assert embed[-2:] == ["-ub", "2048"]  # after ours: the last of a flag wins
    cls = server_command(model(llama={"embedding": True, "pooling_type": 2}), 1)
    assert flags(cls)["--pooling"] == "cls"


def test_llama_server_metrics_become_our_engine_counters() -> None:
    assert engine_counters(METRICS) == {
        "steps": 40.0,
        "sequences": 60.0,  # 1.5 slots per decode, over 40 decodes
        "decoded_tokens": 72.0,  # prompts (cached tokens not decoded) and generated tokens
        "generated_tokens": 10.0,
        "decode_seconds": pytest.approx(0.8),  # slots' summed 1.2 s, 1.5 of them at once
    }
    assert engine_counters("# only comments\nother_metric 3\n") == {}
    assert engine_counters("llamacpp:n_decode_total x\nllamacpp:tokens_predicted_total 4") == {
        "generated_tokens": 4.0
    }


async def test_a_llama_server_that_cannot_start_is_a_failed_replica_saying_why() -> None:
    entry = {
        "name": "m",
        "engine": "llama-server",
        "path": str(SMOLLM2),
        "server_args": ["--no-such-flag"],
    }
    config = parse_config({"models": [entry]}, base_dir=Path.cwd())
    registry = Registry()
    supervisor = Supervisor(config, registry)
    await supervisor.start()
    try:
        (replica,) = registry.replicas("m")
        async with asyncio.timeout(20):
            while replica.state is not ReplicaState.FAILED:
                await asyncio.sleep(0.05)
        assert replica.error is not None
        assert replica.error.startswith("llama-server exited while loading the model (exit code")
        assert "--no-such-flag" in replica.error  # its own words, from its output
        assert not replica.reports_ends and not replica.reports_usage
    finally:
        await supervisor.stop()
