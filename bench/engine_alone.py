"""Our engine loop in-process, on bench/raw_decode.py's workload: no HTTP, no gateway.

N slots of one model copy (workers.engines.loop.model, as a worker loads it), each driven by its own
client thread through the slot's completion path (tokenizing, the sampler chain, text): a
story prompt, then MAX_TOKENS tokens at temperature 0 with end tokens banned, back to back.
Prints one JSON line: tokens/s (generated in the window after a warm-up, as the loop counts
them) and the loop's decode steps. Read against bench.raw_decode.

    python -m bench.engine_alone MODEL.gguf --sequences 8 --seconds 10
"""

from __future__ import annotations

import json
import threading
import time

from workers.api.params import CompletionParams
from workers.engines.base import CancelToken

from .llm_client import story
from .raw_decode import workload_parser

__all__ = ["measure"]

WARMUP_SECONDS = 2.0


def measure(
    path: str,
    sequences: int,
    seconds: float,
    max_tokens: int,
    threads: int,
    n_ctx: int,
    **llama: object,
) -> dict[str, float]:
    from workers.engines.loop.model import LoopLlamaModel

    options = {"n_ctx": n_ctx, "n_threads": threads, **llama}
    model = LoopLlamaModel(path, options, sequences)
    model.load()
    model.warm_up()
    params = CompletionParams(
        [], options={"max_tokens": max_tokens, "temperature": 0}, ignore_eos=True
    )
    stop = threading.Event()

    def client(slot: int) -> None:
        engine, n = model.slot(slot), 0
        while not stop.is_set():
            engine.complete(story(slot * 1000 + n, "engine"), params, CancelToken())
            n += 1

    clients = [threading.Thread(target=client, args=(s,), daemon=True) for s in range(sequences)]
    for thread in clients:
        thread.start()
    time.sleep(WARMUP_SECONDS)  # then the steady state: tokens as the loop generates them
    before, began = model.batching() or {}, time.perf_counter()
    time.sleep(seconds)
    after, elapsed = model.batching() or {}, time.perf_counter() - began
    stop.set()
    for thread in clients:  # each ends after its answer in progress
        thread.join()
    steps = after["steps"] - before["steps"]
    return {
        "sequences": sequences,
        "tokens/s": (after["generated_tokens"] - before["generated_tokens"]) / elapsed,
        "steps": steps,
        "mean_sequences": (after["sequences"] - before["sequences"]) / max(steps, 1),
        "decode ms/step": 1e3
        * (after["decode_seconds"] - before["decode_seconds"])
        / max(steps, 1),
        "ms/step": 1e3 * elapsed / max(steps, 1),
    }


def main() -> None:
    parser = workload_parser(__doc__, 1024)
    parser.add_argument(
        "--llama-json",
        type=json.loads,
        default={},
        help="more model options, e.g. kv_unified, flash_attn",
    )
    args = parser.parse_args()
    print(
        json.dumps(
            measure(
                args.model,
                args.sequences,
                args.seconds,
                args.max_tokens,
                args.threads,
                args.n_ctx,
                **args.llama_json,
            )
        )
    )


if __name__ == "__main__":
    main()
