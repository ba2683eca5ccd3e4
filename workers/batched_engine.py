"""A llama engine with N slots over one copy of the weights: continuous batching.

One `llama_cpp.Llama` loads the model; its context is replaced by one that holds N sequences
(`n_ctx` tokens per slot: N x n_ctx KV cells, split per slot or unified) and is owned by a
`BatchDecoder`. Each slot is a `LlamaEngine` (the single-slot engine, unchanged) over a
`SlotLlama`: the worker gives each of its N engine threads one slot, and the decoder batches
whatever the slots ask it to decode. Embeddings stay on single-slot workers (the config says so).
"""

from __future__ import annotations

import contextlib
from typing import Any

from workers.engine import Engine, EngineInfo
from workers.llama_engine import LlamaEngine, llama_kwargs

__all__ = ["BatchedLlamaEngine"]


class BatchedLlamaEngine:
    kind = "llama"

    def __init__(self, model_path: str, kwargs: dict[str, Any], slots: int) -> None:
        self.model_path = model_path
        self.kwargs = llama_kwargs(kwargs)
        # Split (the default): each slot's cells are its own, so a decode attends over its own
        # sequence only, and a greedy answer is the same beside other requests as alone.
        # Unified: one buffer, and every decode attends over every slot's cells, the caches
        # idle slots keep included (a lone request beside 7 idle slots holding 1,500 tokens
        # each: 22 tok/s against 99 split, `python -m bench.idle_caches`); and where a
        # sequence's cells lie changes its logits' last bits (README, "Slots").
        self.kv_unified = bool(kwargs.get("kv_unified", False))
        self.n_slots = slots
        self._slots: list[LlamaEngine] = []
        self._base: Any = None  # owns the model and the context: freed with it
        self._decoder: Any = None

    def load(self) -> EngineInfo:
        import llama_cpp
        from llama_cpp import _internals

        from workers.batch_decoder import BatchDecoder
        from workers.slot_llama import SlotLlama

        base = llama_cpp.Llama(model_path=self.model_path, **self.kwargs)
        n_ctx = int(base.n_ctx())
        shared = self._share_context(base, _internals)
        self._base = base
        decoder = BatchDecoder(shared.ctx, int(base.n_batch), int(base.n_vocab()), self.n_slots)
        self._decoder = decoder
        first = LlamaEngine(self.model_path, self.kwargs)
        self._slots = [first.adopt(SlotLlama.of(base, decoder, 0, n_ctx))]
        for seq in range(1, self.n_slots):
            slot = first.sibling(SlotLlama.of(base, decoder, seq, n_ctx))
            self._slots.append(slot)
        for engine in self._slots:
            engine.llama.check_cancelled = engine.raise_if_cancelled
        return EngineInfo(n_ctx=n_ctx, n_gpu_layers=int(self.kwargs.get("n_gpu_layers", 0)),
                          embedding=False)  # fmt: skip

    def _share_context(self, base: Any, internals: Any) -> Any:
        """Replace `base`'s one-sequence context with one of N sequences, owned like it."""
        params = base.context_params
        params.n_ctx, params.n_seq_max = int(base.n_ctx()) * self.n_slots, self.n_slots
        params.kv_unified = self.kv_unified
        shared = internals.LlamaContext(model=base._model, params=params, verbose=base.verbose)
        base._ctx.close()
        base._ctx = base._stack.enter_context(contextlib.closing(shared))
        return shared

    def warm_up(self) -> None:
        self._slots[0].warm_up()

    def slot(self, index: int) -> Engine:
        return self._slots[index]

    def batching(self) -> dict[str, float] | None:
        if self._decoder is None:  # not loaded yet
            return None
        stats: dict[str, float] = self._decoder.stats()
        return stats
