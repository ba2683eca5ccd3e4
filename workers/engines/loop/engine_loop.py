"""The engine loop: one thread owns the llama context and serves every slot of a model copy.

Each turn it drops the jobs whose client went away, admits new ones into their slots (reusing
the longest prefix the slot's KV cache holds), fills one batch (`plan_step`), decodes once and
samples each job whose logits are ready on its own batch row, in C. The sampled token's bytes
become text (`TextStream`), and what each job got in the step is delivered after every job has
been sampled, so nothing the loop wakes runs beside its sampling. Jobs are submitted from any
thread; the context, the slots' caches and the jobs' progress belong to this thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.engines.base import GenerationCancelled
from workers.engines.loop.plan import plan_step
from workers.engines.loop.sampling import free_chain
from workers.engines.loop.text import TextStream, token_text
from workers.logs import log

__all__ = ["Delta", "EngineLoop", "Job", "TokenLogprob"]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability and the most likely alternatives at its place."""

    text: str  # workers.engines.loop.text.token_text: `bytes:\xNN` for part of a character
    logprob: float | None  # None: a prompt's first token, which nothing predicts
    top: tuple[tuple[str, float], ...]  # the top N (text, logprob), most likely first


@dataclass(frozen=True)
class Delta:
    """What one step produced for one job: text, and the end of the job when it ended."""

    text: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    finish: str | None = None  # "stop" | "length": the generation ended
    completion_tokens: int = 0  # set with `finish`: tokens generated, an end token excluded
    error: BaseException | None = None  # the job failed or was cancelled: nothing follows
    prompt: tuple[TokenLogprob, ...] = ()  # echo_logprobs: each prompt token's, once read


@dataclass(eq=False)  # compared by identity: each is one generation
class Job:
    seq: int  # the slot, and its sequence id in the shared context
    prompt: list[int]
    chain: Any  # its llama_sampler chain; the loop frees it when the job ends
    # Called on the loop's thread, must not block; or, with `loop` set, on that event loop's
    # thread (every such delivery of a step in one hand-off).
    deliver: Callable[[Delta], None]
    max_tokens: int | None = None
    stops: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; N: the token's and the top N
    # Plain greedy (SamplingSpec.plain_greedy): the top logit not among `banned` is the token.
    argmax: bool = False
    banned: frozenset[int] = frozenset()
    echo_logprobs: bool = False  # the prompt's own logprobs too (`echo` with `logprobs`)
    abandoned: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    # Progress, written by the loop's thread only.
    n_past: int = 0
    pending: list[int] = field(default_factory=list)
    next_token: int | None = None
    generated: int = 0
    held: list[TokenLogprob] = field(default_factory=list)  # logprobs whose text waits
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    text: TextStream = field(init=False)

    def __post_init__(self) -> None:
        self.text = TextStream(self.stops)


def _deliver_all(deltas: list[tuple[Job, Delta]]) -> None:
    for job, delta in deltas:
        job.deliver(delta)


def _shared_prefix(cached: list[int], prompt: list[int]) -> int:
    limit = min(len(cached), len(prompt))
    for index in range(limit):
        if cached[index] != prompt[index]:
            return index
    return limit


class EngineLoop:
    def __init__(self, ctx: Any, vocab: Any, n_batch: int, n_ctx: int, n_seq: int) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.ctx, self._vocab = ctx, vocab
        self.n_batch, self.n_ctx = n_batch, n_ctx  # n_ctx: per slot
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._cached: list[list[int]] = [[] for _ in range(n_seq)]  # each slot's KV tokens
        self._pieces: dict[int, bytes] = {}
        # Every end-of-generation token (banned for `ignore_eos`): found once, at load (50 ms
        # for SmolLM2's 49,152 tokens), not on the event loop when a request first asks.
        is_eog = llama_cpp.llama_vocab_is_eog
        self.end_tokens = tuple(t for t in range(self.n_vocab) if is_eog(vocab, t))
        self._buffer = ctypes.create_string_buffer(256)
        self._inbox: list[Job] = []
        self._changed = threading.Condition()
        self._active: list[Job] = []
        self._out: list[tuple[Job, Delta]] = []
        self._closing = False
        # Written by the loop's thread only: how well the slots batch (worker /status).
        self.steps, self.sequences, self.decoded, self.generated = 0, 0, 0, 0
        self.decode_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._changed:
            self._inbox.append(job)
            self._changed.notify()

    def forget(self, seq: int) -> None:
        """Empty slot `seq`'s cache (after the warm-up: the next prompt starts from nothing)."""
        self.submit(Job(seq, [], None, lambda _: None))

    def stats(self) -> dict[str, float]:
        """Counters since the start: decode steps, the slots they served (`sequences`; over
        `steps`, the mean batch occupancy, near the busy slots' count when they batch well), the
        tokens decoded and generated, and the time decoding. The gateway exports them."""
        mean = self.sequences / self.steps if self.steps else 0.0
        return {
            "steps": self.steps,
            "sequences": self.sequences,
            "decoded_tokens": self.decoded,
            "generated_tokens": self.generated,
            "mean_sequences": mean,
            "decode_seconds": self.decode_seconds,
        }

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (control tokens: none), kept once asked for."""
        piece = self._pieces.get(token)
        if piece is None:
            size = int(
                self._llama_cpp.llama_token_to_piece(
                    self._vocab, token, self._buffer, len(self._buffer), 0, False
                )
            )
            if size < 0:  # a longer piece: its size, negated
                buffer = ctypes.create_string_buffer(-size)
                size = int(
                    self._llama_cpp.llama_token_to_piece(
                        self._vocab, token, buffer, -size, 0, False
                    )
                )
                piece = buffer.raw[:size]
            else:
                piece = self._buffer.raw[:size]
            self._pieces[token] = piece
        return piece

    # The loop's thread

    def close(self) -> None:
        """Stop after the step in progress (before the model and context are freed: a decode
        running while the interpreter exits frees them under it)."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._closing:
            try:
                self._admit()
                self._step()
            except Exception as exc:  # a bug here must fail its requests, not hang them all
                log(f"engine loop: {exc!r}; failing the requests in progress")
                for job in self._active[:]:
                    self._end(job, Delta(error=exc))
            self._flush()

    def _admit(self) -> None:
        with self._changed:
            while not self._inbox and not self._active and not self._closing:
                self._changed.wait()
            arrived, self._inbox = self._inbox, []
        for job in self._active[:]:
            if job.abandoned.is_set():
                self._end(job, Delta(error=GenerationCancelled()))
        for job in arrived:
            self._start(job)

    def _start(self, job: Job) -> None:
        if job.abandoned.is_set() or not job.prompt:  # an empty prompt: forget the slot's cache
            if not job.prompt:
                self._llama_cpp.llama_memory_seq_rm(self._memory, job.seq, 0, -1)
                self._cached[job.seq].clear()
            self._end(job, Delta(error=GenerationCancelled()))
            return
        cached = self._cached[job.seq]
        # One prompt token at least is decoded: its logits give the first sample. A prompt whose
        # own logprobs are asked for is read whole: a cached prefix has no logits left.
        keep = min(_shared_prefix(cached, job.prompt), len(job.prompt) - 1)
        keep = 0 if job.echo_logprobs else keep
        self._llama_cpp.llama_memory_seq_rm(self._memory, job.seq, keep, -1)
        del cached[keep:]
        job.n_past, job.pending = keep, job.prompt[keep:]
        self._active.append(job)

    def _step(self) -> None:
        if not self._active:
            return
        planned = self._fill()
        began = time.monotonic()
        status = int(self._llama_cpp.llama_decode(self.ctx, self._batch))
        self.decode_seconds += time.monotonic() - began
        self.steps, self.sequences = self.steps + 1, self.sequences + len(planned)
        self.decoded += int(self._batch.n_tokens)
        if status != 0:  # fails the jobs in this batch, not the loop
            for job, _, _, _ in planned:
                self._end(job, Delta(error=RuntimeError(f"llama_decode returned {status}")))
            return
        for job, tokens, row, first in planned:
            if job.echo_logprobs and job.generated == 0:  # a chunk of its prompt
                self._read_prompt(job, tokens, first)
            job.n_past += len(tokens)
            self._cached[job.seq] += tokens
            if row is not None:
                if job.echo_logprobs and job.generated == 0:  # its prompt is all read
                    self._out.append((job, Delta(prompt=tuple(job.prompt_logprobs))))
                self._sample(job, row)

    def _read_prompt(self, job: Job, tokens: list[int], first: int) -> None:
        """The logprob of each prompt token after these, from these tokens' rows."""
        if job.n_past == 0:
            job.prompt_logprobs.append(TokenLogprob(token_text(self.piece(tokens[0])), None, ()))
        for offset in range(len(tokens)):
            following = job.n_past + offset + 1
            if following < len(job.prompt):
                entry = self._logprob(first + offset, job.prompt[following], job.top_logprobs or 0)
                job.prompt_logprobs.append(entry)

    def _fill(self) -> list[tuple[Job, list[int], int | None, int]]:
        """Put the planned tokens in the batch; each job's tokens, the row it samples, and the
        row of its first token (a prompt read for its logprobs has logits on every row)."""
        jobs = self._active
        plan = plan_step(
            [len(j.pending) for j in jobs], self.n_batch, [j.next_token is not None for j in jobs]
        )
        batch, planned, i = self._batch, [], 0
        # In the batch, tokens lie in sequence order: with KV split per slot llama.cpp cuts a
        # batch into micro-batches of equal share per sequence, and tokens out of that order
        # cost it extra ones (SmolLM2, 8 slots: 65-72 ms a step instead of 33-46).
        for job, count in sorted(zip(jobs, plan, strict=True), key=lambda pair: pair[0].seq):
            if count == 0:
                continue
            if job.next_token is not None:
                tokens, job.next_token = [job.next_token], None
            else:
                tokens, job.pending = job.pending[:count], job.pending[count:]
            every_row = job.echo_logprobs and job.generated == 0
            for offset, token in enumerate(tokens):
                batch.token[i + offset], batch.pos[i + offset] = token, job.n_past + offset
                batch.seq_id[i + offset][0], batch.n_seq_id[i + offset] = job.seq, 1
                batch.logits[i + offset] = every_row
            first, i = i, i + len(tokens)
            ready = not job.pending  # the prompt is all in: this row's logits give a token
            batch.logits[i - 1] = ready or every_row
            planned.append((job, tokens, i - 1 if ready else None, first))
        batch.n_tokens = i
        return planned

    def _pick(self, job: Job, row: int) -> int:
        if job.argmax:  # the chain would only find the top logit, copying the vocabulary first
            pointer = self._llama_cpp.llama_get_logits_ith(self.ctx, row)
            token = int(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).argmax())
            if token not in job.banned:
                return token
        return int(self._llama_cpp.llama_sampler_sample(job.chain, self.ctx, row))

    def _sample(self, job: Job, row: int) -> None:
        token = self._pick(job, row)
        if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._end(job, self._last(job, "stop"))
            return
        job.generated += 1
        self.generated += 1
        if job.top_logprobs is not None:
            job.held.append(self._logprob(row, token, job.top_logprobs))
        text = job.text.push(self.piece(token))
        if job.text.stopped:
            self._end(job, self._last(job, "stop", text))
        elif job.generated == job.max_tokens or job.n_past + 1 >= self.n_ctx:
            self._end(job, self._last(job, "length", text))
        else:
            job.next_token = token
            if text:
                self._out.append((job, Delta(text, tuple(job.held))))
                job.held.clear()

    @staticmethod
    def _last(job: Job, reason: str, text: str = "") -> Delta:
        text += job.text.finish()
        return Delta(text, tuple(job.held), reason, job.generated)

    def _logprob(self, row: int, token: int, top_n: int) -> TokenLogprob:
        pointer = self._llama_cpp.llama_get_logits_ith(self.ctx, row)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float64)
        peak = logits.max()
        total = peak + np.log(np.exp(logits - peak).sum())
        best = np.argpartition(-logits, top_n)[:top_n] if top_n else np.array([], dtype=int)
        best = best[np.argsort(-logits[best], kind="stable")]
        top = tuple((token_text(self.piece(int(t))), float(logits[t] - total)) for t in best)
        return TokenLogprob(token_text(self.piece(token)), float(logits[token] - total), top)

    def _end(self, job: Job, last: Delta) -> None:
        if job in self._active:
            self._active.remove(job)
        free_chain(job.chain)
        job.chain = None
        self._out.append((job, last))

    def _flush(self) -> None:
        """Deliver the step's deltas: to each event loop in one hand-off, else directly."""
        out, self._out = self._out, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Delta]]] = {}
        for job, delta in out:
            if job.loop is None:
                job.deliver(delta)
            else:
                by_loop.setdefault(job.loop, []).append((job, delta))
        for loop, deltas in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process exits
                loop.call_soon_threadsafe(_deliver_all, deltas)
