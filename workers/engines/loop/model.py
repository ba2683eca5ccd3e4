"""A llama model served by the engine loop: one copy of the weights, N slots.

One `llama_cpp.Llama` loads the model; its context is replaced by one that holds N sequences
(`n_ctx` tokens per slot: N x n_ctx KV cells, split per slot or unified) and is owned by an
`EngineLoop`. Each slot is a `LlamaEngine` (chat templates, tools, shaping) over a `SlotLlama`
whose generation runs on the loop. A single-slot worker is the same with N = 1. Embedding
models stay on a plain `Llama` (workers.engines.llama): the loop generates.

Flash attention follows llama-server's default, `auto` (on where the backend supports it),
unless the model's options say `flash_attn: true` or `false`.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
from typing import Any

from workers.engines.base import Engine, EngineInfo
from workers.engines.llama import WARM_UP_TEXT, LlamaEngine, llama_kwargs

__all__ = ["LoopLlamaModel"]


class LoopLlamaModel:
    kind = "llama"
    green = True

    def __init__(self, model_path: str, kwargs: dict[str, Any], slots: int) -> None:
        self.model_path = model_path
        self.kwargs = llama_kwargs(kwargs)
        # Split (the default): each slot's cells are its own, so a decode attends over its own
        # sequence only, and a greedy answer is the same beside other requests as alone.
        # Unified: one buffer, and every decode attends over every slot's cells, the caches
        # idle slots keep included (docs/engines.md, "Slots").
        self.kv_unified = bool(kwargs.get("kv_unified", False))
        self.flash_attn: bool | None = kwargs.get("flash_attn")  # None: auto
        self.n_slots = slots
        self._slots: list[LlamaEngine] = []
        self._base: Any = None  # owns the model and the context: freed with it
        self._loop: Any = None

    def load(self) -> EngineInfo:
        import llama_cpp

        from workers.engines.loop.engine_loop import EngineLoop
        from workers.engines.loop.slot import SlotLlama

        base = llama_cpp.Llama(model_path=self.model_path, **self.kwargs)
        n_ctx = int(base.n_ctx())
        shared = self._share_context(base, llama_cpp)
        self._base = base
        loop = EngineLoop(shared.ctx, base._model.vocab, int(base.n_batch), n_ctx, self.n_slots)
        atexit.register(loop.close)  # runs before the interpreter frees the model
        self._loop = loop
        first = LlamaEngine(self.model_path, self.kwargs)
        self._slots = [first.adopt(SlotLlama.of(base, loop, 0, n_ctx))]
        for seq in range(1, self.n_slots):
            self._slots.append(first.sibling(SlotLlama.of(base, loop, seq, n_ctx)))
        return EngineInfo(
            n_ctx=n_ctx, n_gpu_layers=int(self.kwargs.get("n_gpu_layers", 0)), embedding=False
        )

    def _share_context(self, base: Any, llama_cpp: Any) -> Any:
        """Replace `base`'s one-sequence context with one of N sequences, owned like it."""
        from llama_cpp import _internals

        params = base.context_params
        params.n_ctx, params.n_seq_max = int(base.n_ctx()) * self.n_slots, self.n_slots
        params.kv_unified = self.kv_unified
        params.flash_attn_type = {
            None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[self.flash_attn]
        shared = _internals.LlamaContext(model=base._model, params=params, verbose=base.verbose)
        base._ctx.close()
        base._ctx = base._stack.enter_context(contextlib.closing(shared))
        return shared

    def warm_up(self) -> None:
        """Generate one token from a prompt of several (one multi-token batch, as llama-server
        decodes before it accepts requests), then forget it."""
        from workers.engines.loop.engine_loop import Delta, Job
        from workers.engines.loop.sampling import SamplingSpec, build_chain

        base, loop = self._base, self._loop
        tokens = base.tokenize(WARM_UP_TEXT.encode(), add_bos=True, special=False)
        done: queue.SimpleQueue[Delta] = queue.SimpleQueue()
        chain = build_chain(SamplingSpec(temperature=0), base._model.vocab, int(base.n_vocab()))
        loop.submit(Job(0, tokens[: max(2, min(len(tokens), loop.n_ctx - 1))], chain, done.put, 1))
        while (delta := done.get()).finish is None:
            if delta.error is not None:
                raise delta.error
        loop.forget(0)

    def slot(self, index: int) -> Engine:
        return self._slots[index]

    def batching(self) -> dict[str, float] | None:
        if self._loop is None:  # not loaded yet
            return None
        stats: dict[str, float] = self._loop.stats()
        return stats
