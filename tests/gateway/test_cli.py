"""`llm-gateway check-config`: prints the plan, or names the bad key and exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip


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
