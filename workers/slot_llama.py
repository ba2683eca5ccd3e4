"""One slot of a batching llama worker: a `llama_cpp.Llama` whose context is one sequence of a
shared one.

llama-cpp-python's whole generation path (chat templates, grammars, stop strings, logprobs,
tool-call handlers) is Python written against one `Llama`; it touches the llama.cpp context in
three places only: `eval` (decode tokens), `sample` (read the last logits) and `generate`'s
KV-cache trimming. A slot is a copy of the loaded `Llama` that shares its model and reroutes
those three: `eval` hands its tokens to the `BatchDecoder` (workers.batch_decoder), which
decodes every slot's pending tokens in one batch and returns this slot's logits; `sample` runs
the slot's own sampler chain over that copy (what `llama_sampler_sample` does with the
context's); the context stand-in trims only this slot's sequence. Everything else is the
`Llama` code that the single-slot worker runs, unchanged.

A slot keeps its tokens and KV cache after a request, so `generate` reuses the longest common
prefix with the next prompt this slot gets, as llama-server's slots do.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Generator, Sequence
from typing import Any, cast

import llama_cpp
import numpy as np
from llama_cpp import Llama

from workers.batch_decoder import BatchDecoder

__all__ = ["SlotContext", "SlotLlama"]

# llama.cpp's llama_token_data, as numpy lays out a C struct of (int32, float, float).
_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class SlotContext:
    """What `Llama` asks of its `LlamaContext`, answered for one sequence of the shared one."""

    def __init__(self, decoder: BatchDecoder, seq: int, n_ctx: int) -> None:
        self.decoder, self.seq, self._n_ctx = decoder, seq, n_ctx
        self.ctx = decoder.ctx  # read by llama-cpp-python only to word an error message

    def n_ctx(self) -> int:
        return self._n_ctx

    def kv_cache_seq_rm(self, seq_id: int, p0: int, p1: int) -> bool:
        # `Llama` passes -1 ("every sequence"): here that is this slot's only.
        return self.decoder.remove(self.seq, p0, p1)

    def kv_cache_clear(self) -> None:
        self.decoder.remove(self.seq, 0, -1)

    def reset_timings(self) -> None:
        """Timings are the shared context's: nothing per slot."""

    def print_timings(self) -> None:
        """Timings are the shared context's: nothing per slot."""


class _Candidates:
    """A slot's `llama_token_data_array` buffer, refilled from each row of logits it samples."""

    def __init__(self, n_vocab: int) -> None:
        self._ids = np.arange(n_vocab, dtype=np.intc)
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._pointer = self._data.ctypes.data_as(llama_cpp.llama_token_data_p)

    def sample(self, sampler: Any, logits: np.ndarray) -> int:
        """Sample and accept a token: `llama_sampler_sample`, but over this copy of the logits,
        since the shared context's belong to whichever batch was decoded last."""
        data = self._data
        data["id"], data["logit"], data["p"] = self._ids, logits, 0.0  # samplers sort in place
        candidates = llama_cpp.llama_token_data_array(self._pointer, len(data), -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
        token = int(data["id"][candidates.selected])
        llama_cpp.llama_sampler_accept(sampler, token)
        return token


class SlotLlama(Llama):
    """A `Llama` that is one slot of a batching worker; made by `SlotLlama.of`, never loaded."""

    # Set per request by the engine: raises when the request's client has gone away.
    check_cancelled: Callable[[], None] = staticmethod(lambda: None)
    _candidates_buffer: _Candidates

    @classmethod
    def of(cls, base: Llama, decoder: BatchDecoder, seq: int, n_ctx: int) -> SlotLlama:
        """A slot sharing `base`'s model (and its handlers and tokenizer): sequence `seq`."""
        slot: SlotLlama = cls.__new__(cls)
        slot.__dict__.update(base.__dict__)
        slot._ctx = SlotContext(decoder, seq, n_ctx)  # type: ignore[assignment]
        slot._n_ctx = n_ctx
        slot.n_tokens = 0
        slot._requires_eval = True
        slot._sampler = None
        slot._mirostat_mu = ctypes.c_float(10.0)
        slot.input_ids = np.zeros((n_ctx,), dtype=np.intc)
        rows = n_ctx if slot._logits_all else 1
        slot.scores = np.zeros((rows, slot._n_vocab), dtype=np.single)
        slot._candidates_buffer = _Candidates(slot._n_vocab)
        return slot

    @property
    def _slot(self) -> SlotContext:
        return cast(SlotContext, self._ctx)

    def eval(self, tokens: Sequence[int]) -> None:
        """Decode `tokens` after this slot's `n_tokens`, in the shared batch."""
        context, n_past, count = self._slot, self.n_tokens, len(tokens)
        if count == 0:
            return
        context.decoder.remove(context.seq, n_past, -1)
        rows = context.decoder.decode(
            context.seq, list(tokens), n_past, self._logits_all, self.check_cancelled
        )
        self.input_ids[n_past : n_past + count] = tokens
        if self._logits_all:
            self.scores[n_past : n_past + count, :] = rows
        else:  # one row: the last position's, all that sampling reads
            self.scores[0, :] = rows[-1]
        self.n_tokens += count
        self._requires_eval = False

    def generate(self, *args: Any, **kwargs: Any) -> Generator[int, Sequence[int] | None, None]:
        """`Llama.generate`; when it ends (the request's generation is over), the decoder stops
        waiting for this slot's next token."""
        try:
            yield from super().generate(*args, **kwargs)
        finally:
            self._slot.decoder.leave(self._slot.seq)

    def sample(self, *args: Any, idx: int | None = None, **kwargs: Any) -> int:
        """`Llama.sample` over this slot's logits (the row of position `idx`, else the last)."""
        made_here = self._sampler is None
        sampler: Any = self._init_sampler(*args, **kwargs) if made_here else self._sampler
        self._sampler = sampler
        position = self.n_tokens - 1 if idx is None else idx
        row = self.scores[position if self._logits_all else 0]
        try:
            return self._candidates_buffer.sample(sampler.sampler, row)
        finally:
            if made_here:
                self._sampler = None

    def close(self) -> None:
        """The model and the context belong to the loaded `Llama`, not to its slots."""

    def __del__(self) -> None:
        """As close: nothing of a slot's own needs freeing."""
