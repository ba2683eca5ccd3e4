"""What the caches idle slots keep cost a lone request, in each KV layout (docs/engines.md).

One engine loop of 8 slots, in process: a 64-token answer on slot 0, then 7 slots each
read a ~1,500-token prompt (and keep it, as slots do for the next turn), then slot 0 answers
again, alone. Prints tokens/s of both answers, for the layout given.

    python -m bench.idle_caches MODEL.gguf split|unified
"""

from __future__ import annotations

import sys
import time

from workers.engines.loop.model import LoopLlamaModel

__all__ = ["main"]

PASSAGE = "The river ran past the old mill and the children played. " * 120


def _rate(engine: LoopLlamaModel, slot: int, prompt: str, tokens: int) -> float:
    began, count = time.perf_counter(), 0
    llama = engine.slot(slot).llama  # type: ignore[attr-defined]
    for _ in llama.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
        count += 1
    return count / (time.perf_counter() - began)


def main() -> None:
    path, layout = sys.argv[1], sys.argv[2]
    params = {
        "n_ctx": 2048,
        "n_threads": 2,
        "n_threads_batch": 2,
        "verbose": False,
        "kv_unified": layout == "unified",
    }
    engine = LoopLlamaModel(path, params, 8)
    engine.load()
    before = _rate(engine, 0, "Once upon a time", 64)
    for slot in range(1, 8):
        _rate(engine, slot, f"Chapter {slot}. {PASSAGE}", 1)
    after = _rate(engine, 0, "Another story begins", 64)
    print(f"{layout}: alone {before:.0f} tok/s; beside 7 idle slots' caches {after:.0f} tok/s")


if __name__ == "__main__":
    main()
