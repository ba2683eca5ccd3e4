"""The pool of the shared end-to-end gateway: the demo models, small contexts, one thread each."""

from __future__ import annotations

from typing import Any

from tests.support import GEMMA3, SMOLLM2

__all__ = ["CONFIG", "LLAMA"]

LLAMA: dict[str, Any] = {"n_ctx": 1024, "n_threads": 1}
CONFIG = {
    "models": [
        {
            "name": "smollm2",
            "aliases": ["gpt-3.5-turbo"],
            "path": str(SMOLLM2),
            "replicas": 2,
            "llama": LLAMA,
        },
        {"name": "gemma3-270m", "path": str(GEMMA3), "llama": LLAMA},
        {
            "name": "smollm2-embed",
            "path": str(SMOLLM2),
            "llama": {"n_ctx": 512, "n_threads": 1, "embedding": True},
        },
    ]
}
