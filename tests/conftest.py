"""Each test's tier as a pytest marker, from where it lives (tests/README.md says what each tier
proves and needs): `pytest -m unit` (`make test-fast`) runs what starts nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# By folder (and for a few files by name): the tier a test belongs to.
_FOLDERS = {"gateway": "unit", "workers": "unit", "standin": "standin", "e2e": "e2e"}
# Worker tests that start a real worker process (a stand-in or a llama model).
_WORKER_PROCESSES = {
    "test_standin_worker.py",
    "test_llama_worker.py",
    "test_llama_batching.py",
    "test_llama_build.py",
}


def tier(path: Path) -> str:
    relative = path.relative_to(TESTS)
    if relative.name in _WORKER_PROCESSES:
        return "worker"
    return _FOLDERS.get(relative.parts[0], "deploy") if len(relative.parts) > 1 else "deploy"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier(Path(str(item.path))))
