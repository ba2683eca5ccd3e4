"""The ceiling scenario 9 is read against: scenario 9's workload on llama.cpp's batch API alone.

N sequences in one context (as the batching worker makes it: n_ctx per sequence, unified KV),
each running requests back to back: a story prompt (one chunk), then MAX_TOKENS tokens decoded
one per step (the top logit taken: no sampler), every sequence's next token in one
`llama_decode`. No HTTP, no Python generation loop: what is left of the slots' speed once only
the decodes remain. Prints one JSON line: tokens/s, decode steps and the mean step.

    python -m bench.raw_decode MODEL.gguf --sequences 8 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .llm_client import story

__all__ = ["measure", "workload_parser"]


class _Batch:
    """One llama_batch, filled from (token, position, sequence, wants logits) rows."""

    def __init__(self, llama_cpp: Any, ctx: Any, size: int, sequences: int) -> None:
        self._llama_cpp, self._ctx = llama_cpp, ctx
        self._batch = llama_cpp.llama_batch_init(size, 0, sequences)

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        batch = self._batch
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.logits[i] = token, pos, logits
            batch.seq_id[i][0], batch.n_seq_id[i] = seq, 1
        batch.n_tokens = len(rows)
        if self._llama_cpp.llama_decode(self._ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")


@dataclass
class _Sequence:
    """One sequence's request: its next position, its prompt still to ingest, tokens left."""

    pos: int
    prompt: list[int]
    left: int
    row: int = -1  # its row in the last batch: the logits its next token is taken from


def measure(
    path: str,
    sequences: int,
    seconds: float,
    max_tokens: int,
    threads: int,
    n_ctx: int,
    unified: bool = True,
    flash_attn: bool = False,
) -> dict[str, float]:
    import llama_cpp
    from llama_cpp import Llama, _internals

    # Every sequence's whole prompt may start in one step: a batch to hold them all.
    base = Llama(
        model_path=path,
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=max(512, 64 * sequences),
        verbose=False,
    )
    params = base.context_params
    params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * sequences, sequences, unified
    params.flash_attn_type = 1 if flash_attn else 0
    ctx = _internals.LlamaContext(model=base._model, params=params, verbose=False)
    memory, n_vocab = llama_cpp.llama_get_memory(ctx.ctx), base.n_vocab()
    batch = _Batch(llama_cpp, ctx.ctx, int(base.n_batch), sequences)
    prompts = [base.tokenize(story(i, "raw").encode()) for i in range(64)]
    # Staggered: the sequences' requests end at different steps, as the clients' do.
    state = [_Sequence(0, prompts[s], max_tokens * (s + 1) // sequences) for s in range(sequences)]
    generated = steps = requests = 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        rows: list[tuple[int, int, int, bool]] = []
        for seq, entry in enumerate(state):
            if entry.prompt:  # a new request: its whole prompt in this step
                rows += [(t, entry.pos + i, seq, False) for i, t in enumerate(entry.prompt)]
                entry.pos, entry.prompt = entry.pos + len(entry.prompt), []
            else:  # the top token of its last logits
                logits = llama_cpp.llama_get_logits_ith(ctx.ctx, entry.row)
                token = int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())
                rows.append((token, entry.pos, seq, False))
                entry.pos, entry.left, generated = entry.pos + 1, entry.left - 1, generated + 1
            entry.row = len(rows) - 1
            rows[-1] = (*rows[-1][:3], True)
        batch.decode(rows)
        steps += 1
        for seq, entry in enumerate(state):
            if entry.left <= 0:  # its request is over: the next starts from an empty sequence
                llama_cpp.llama_memory_seq_rm(memory, seq, 0, -1)
                requests += 1
                state[seq] = _Sequence(0, prompts[requests % len(prompts)], max_tokens)
    ctx.close()  # type: ignore[no-untyped-call]
    return {
        "sequences": sequences,
        "tokens/s": generated / elapsed,
        "steps": steps,
        "ms/step": elapsed / steps * 1e3,
    }


def workload_parser(doc: str, n_ctx: int) -> argparse.ArgumentParser:
    """The workload's options, shared with bench.engine_alone (the same work, our engine)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=n_ctx)
    return parser


def main() -> None:
    parser = workload_parser(__doc__, 2048)
    parser.add_argument("--split", action="store_true", help="KV split per sequence")
    parser.add_argument("--flash-attn", action="store_true")
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
                not args.split,
                args.flash_attn,
            )
        )
    )


if __name__ == "__main__":
    main()
