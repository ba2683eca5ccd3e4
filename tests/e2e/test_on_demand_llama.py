"""On-demand loading with the real demo models in a RAM budget that holds only one of them: each
request loads its model, evicting the other, and the memory estimate matches what a real worker
holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.config.file import parse_config
from gateway.replicas.footprint import needs
from tests.support import GEMMA3, SMOLLM2, GatewayProcess, running_gateway

LLAMA = {"n_ctx": 1024, "n_threads": 1}
# SmolLM2 is estimated at ~240 MiB here, Gemma 3 270M at ~420 MiB: one at a time in 500 MiB.
CONFIG: dict[str, Any] = {
    "memory": {"cpu": "500MiB"},
    "scaling": {"min_residency": 0},
    "models": [
        {
            "name": name,
            "path": str(path),
            "replicas": {"min": 0, "max": 1},
            "llama": LLAMA,
            "queue_timeout": 120,
        }
        for name, path in (("smollm2", SMOLLM2), ("gemma3-270m", GEMMA3))
    ],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(
        CONFIG, tmp_path_factory.mktemp("on-demand"), log=("--log-level", "info")
    )


def loaded(gateway: GatewayProcess) -> list[str]:
    return [w["model"] for w in gateway.workers() if w["state"] not in ("draining", "stopped")]


def test_each_model_loads_when_asked_for_and_evicts_the_other(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    listed = {m.id: (m.model_extra or {})["status"]["value"] for m in client.models.list().data}
    assert listed == {"smollm2": "unloaded", "gemma3-270m": "unloaded"}
    for model in ("smollm2", "gemma3-270m", "smollm2"):
        answer = client.completions.create(model=model, prompt="Once upon a time", max_tokens=4)
        assert answer.choices[0].text and answer.model == model
        assert loaded(gateway) == [model]
    log = gateway.log_path.read_text()
    assert "smollm2[0]: evicted (least recently used)" in log
    assert "gemma3-270m[0]: evicted (least recently used)" in log


def test_the_estimate_covers_what_the_real_worker_holds_within_a_fifth(
    gateway: GatewayProcess,
) -> None:
    models = parse_config(CONFIG, base_dir=Path.cwd()).models
    for model in models:
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused").completions.create(
            model=model.name, prompt="hello " * 300, max_tokens=4
        )
        (worker,) = [
            w for w in gateway.workers() if w["model"] == model.name and w["state"] == "ready"
        ]
        resident = _rss(worker["pid"])
        estimate = needs(model, "cpu")["cpu"]
        assert resident <= estimate <= resident * 1.2, (model.name, resident, estimate)


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024
