"""`llm-gateway check-config`: prints the plan, or names the bad key and exits non-zero; and
`llm-gateway health`, a container's health check."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from gateway.cli import main
from gateway.config.file import ServerConfig
from gateway.health import health_url
from tests.support import GEMMA3, REPO, SMOLLM2


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_shipped_config_is_valid_and_its_plan_lists_every_replica() -> None:
    result = check_config(REPO / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "smollm2 (aliases: gpt-3.5-turbo)" in result.stdout
    assert result.stdout.count("replica ") == 4
    assert "device cpu" in result.stdout


def test_a_bad_key_is_named_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  - {name: m, engine: standin, replicas: -1}\n")
    result = check_config(config)
    assert result.returncode == 2
    assert "models[0] (m).replicas: expected a positive integer or {min: N, max: M}, got -1" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.yaml")
    assert result.returncode == 2 and "cannot read config file" in result.stderr


def test_the_plan_shows_upstreams_by_their_key_s_variable_never_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  - name: m\n    routing: prefix_affinity\n    upstreams:\n"
        "      - {url: 'http://10.0.0.5:9000/v1', capacity: 4, api_key_env: HOME}\n"
        "      - {dns: 'workers.svc:9000', upstream_model: qwen}\n"
    )
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    assert "upstream: http://10.0.0.5:9000/v1, capacity 4, key from $HOME" in result.stdout
    assert "upstream: every address of workers.svc on port 9000/v1, capacity 1, model qwen" in (
        result.stdout
    )
    assert "routing: prefix_affinity" in result.stdout and str(Path.home()) not in result.stdout


def test_the_plan_shows_each_replicas_memory_estimate_and_where_the_min_replicas_go(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"memory: {{cpu: 2GiB, 0: 1GiB, 1: 1GiB}}\nmodels:\n"
        f"  - {{name: smol, path: {SMOLLM2}, capacity: 1, llama: {{n_ctx: 2048}}}}\n"
        f"  - name: gemma\n    path: {GEMMA3}\n    gpus: auto\n    capacity: 1\n"
        "    replicas: {min: 2, max: 3}\n    idle_ttl: 600\n"
    )
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    # SmolLM2 Q4_1 at n_ctx 2048: 93 MiB of weights, 45 MiB of KV cache, buffers and process.
    assert "replica 0: device cpu; memory estimate cpu 259.8 MiB" in result.stdout
    # Gemma's layers, KV cache and buffers on the GPU it gets; the process in RAM.
    assert "replica 2: device auto; memory estimate cpu 96.0 MiB, GPU 314.4 MiB" in result.stdout
    assert "on demand: min 2, max 3; idle stop after 600 s; another replica when 1 wait" in (
        result.stdout
    )
    assert "memory budgets: cpu 2.00 GiB, 0 1.00 GiB, 1 1.00 GiB" in result.stdout
    assert "- smol[0] on cpu\n- gemma[0] on 0\n- gemma[1] on 1" in result.stdout


def test_a_config_whose_min_replicas_cannot_fit_is_refused_naming_them(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"memory: {{cpu: 600MiB}}\nmodels:\n  - {{name: smol, path: {SMOLLM2}, replicas: 1}}\n"
        f"  - {{name: gemma, path: {GEMMA3}, replicas: 1}}\n"
    )
    result = check_config(config)
    assert result.returncode == 2
    assert "the min replicas do not fit the memory budgets" in result.stderr
    assert "gemma[0]: cannot start: not enough memory to start gemma[0] on cpu" in result.stderr
    assert "held by smol[0]" in result.stderr and "(min)" in result.stderr


class _Probed(http.server.BaseHTTPRequestHandler):
    """/health answers 200, /ready 503 (a gateway still loading its models)."""

    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(200 if self.path == "/health" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def probed() -> Iterator[http.server.ThreadingHTTPServer]:
    _Probed.paths = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Probed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def health_config(tmp_path: Path, port: int) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {port}}}\nmodels:\n  - {{name: m, engine: standin}}\n")
    return str(config)


def test_health_asks_the_port_the_config_names_and_exits_0_on_200(
    tmp_path: Path, probed: http.server.ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = health_config(tmp_path, probed.server_address[1])
    assert main(["health", "--config", config]) == 0
    assert main(["health", "--config", config, "--ready"]) == 1  # /ready answers 503
    assert _Probed.paths == ["/health", "/ready"]
    assert f"unhealthy: http://127.0.0.1:{probed.server_address[1]}/ready: 503" in (
        capsys.readouterr().err
    )


def test_health_exits_1_when_nothing_answers_and_2_on_a_bad_config(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: nothing answers there
        assert main(["health", "--config", health_config(tmp_path, sock.getsockname()[1])]) == 1
    assert main(["health", "--config", str(tmp_path / "nope.yaml")]) == 2


def test_health_asks_loopback_of_a_gateway_bound_to_every_address() -> None:
    assert health_url(ServerConfig(host="0.0.0.0", port=9001)) == "http://127.0.0.1:9001/health"
    assert health_url(ServerConfig(host="::", port=9001), ready=True) == "http://[::1]:9001/ready"
    assert health_url(ServerConfig(host="10.0.0.5")) == "http://10.0.0.5:8000/health"
    # serve's --host and --port, as the image's entry point passes them, override the file
    assert health_url(ServerConfig(), host="0.0.0.0", port=8080) == "http://127.0.0.1:8080/health"


def test_the_cli_starts_without_the_serving_stack_for_health_checks() -> None:
    """Docker runs `llm-gateway health` every few seconds: aiohttp, numpy and gguf (1 s of CPU
    to import) wait until a command needs them."""
    code = "import sys, gateway.cli; print(sorted({'aiohttp', 'numpy', 'gguf'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_check_config_shows_a_llama_server_replica_s_command_or_says_its_binary_is_missing(
    tmp_path: Path,
) -> None:
    entry = (
        f"{{name: s, engine: llama-server, path: {SMOLLM2}, capacity: 2, "
        "llama: {n_ctx: 1024}, server_args: [--jinja]}"
    )
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  - {entry}\n")
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    assert f"-m {SMOLLM2} -np 2 -c 2048" in result.stdout and "--port PORT" in result.stdout
    assert result.stdout.rstrip().count("--jinja") == 1
    config.write_text(f"llama_server: {{binary: {tmp_path / 'none'}}}\nmodels:\n  - {entry}\n")
    result = check_config(config)
    assert result.returncode == 2 and result.stderr.startswith("invalid config: llama_server")
    assert f"no executable file at {tmp_path / 'none'}" in result.stderr
