"""Continuous batching: one thread decodes every slot's pending tokens in one `llama_decode`.

Slots (workers.slot_llama) run their requests on their own threads and call `decode` with the
tokens they need evaluated: a prompt, or the one token they just sampled. The decoder thread
collects what is pending, plans a batch (`plan_step`: every generating slot's next token first,
then chunks of prompts in arrival order, up to `n_batch` tokens, so a long prompt is ingested
over several steps and never stalls the others' next token), decodes once, copies out each
finished slot's logits and wakes it. After a step it waits a moment for that step's slots to
come back with their next token, so they decode together instead of taking turns.

The context belongs to this class: `decode` and `remove` (KV-cache trimming) are the only ways
in, and a lock keeps the trimming out of a running decode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BatchDecoder", "plan_step"]

# How long a step waits for the previous step's slots to come back with their next token: a
# share of the last generation step's time (a slot that misses a step waits a whole step), at
# least 2 ms. A slot whose request ended leaves the wait at once (`leave`).
GATHER_SHARE, GATHER_MIN_SECONDS = 0.5, 0.002


def plan_step(remaining: list[int], budget: int) -> list[int]:
    """How many tokens of each pending request (in arrival order; `remaining` tokens left each)
    go into the next batch of at most `budget`: single tokens (generation) first, then prompts."""
    plan = [1 if left == 1 else 0 for left in remaining]
    room = budget - sum(plan)
    for index, left in enumerate(remaining):
        if left > 1 and room > 0:
            plan[index] = min(left, room)
            room -= plan[index]
    return plan


@dataclass(eq=False)  # compared by identity: each is one request's decode
class _Work:
    seq: int
    tokens: list[int]
    n_past: int
    all_logits: bool
    sent: int = 0  # tokens of `tokens` decoded so far
    rows: list[np.ndarray] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class BatchDecoder:
    def __init__(self, ctx: Any, n_batch: int, n_vocab: int, n_seq: int) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.ctx = ctx
        self.n_batch, self.n_vocab = n_batch, n_vocab
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq)
        self._lock = threading.Lock()  # held while the context is in use
        self._changed = threading.Condition()
        self._pending: list[_Work] = []
        self._expected: set[int] = set()  # sequences of the last step, likely back soon
        self._gather_seconds = GATHER_MIN_SECONDS
        # Written by the decoder thread only: how well the slots batch (worker /status).
        self.steps, self.sequences, self.decoded, self.decode_seconds = 0, 0, 0, 0.0
        self._thread = threading.Thread(target=self._run, name="batch-decoder", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, float]:
        """Decode steps so far, the tokens they decoded, the mean number of slots (sequences)
        in a step (near the busy slots' count when they batch well) and the time decoding."""
        mean = self.sequences / self.steps if self.steps else 0.0
        return {"steps": self.steps, "decoded_tokens": self.decoded, "mean_sequences": mean,
                "decode_seconds": self.decode_seconds}  # fmt: skip

    # Called from the slots' threads

    def decode(
        self,
        seq: int,
        tokens: list[int],
        n_past: int,
        all_logits: bool,
        check_cancelled: Callable[[], None],
    ) -> list[np.ndarray]:
        """Decode `tokens` at positions `n_past`...; the logits of the last (or of every) one."""
        work = _Work(seq, tokens, n_past, all_logits)
        with self._changed:
            self._pending.append(work)
            self._changed.notify_all()
        while not work.done.wait(0.05):
            try:
                check_cancelled()
            except BaseException:
                self._withdraw(work)
                raise
        if work.error is not None:
            raise work.error
        return work.rows

    def leave(self, seq: int) -> None:
        """Sequence `seq`'s request has ended: the next step need not wait for it."""
        with self._changed:
            self._expected.discard(seq)
            self._changed.notify_all()

    def remove(self, seq: int, p0: int, p1: int) -> bool:
        """Forget sequence `seq`'s KV cache from position p0 to p1 (-1: to the end)."""
        with self._lock:
            return bool(self._llama_cpp.llama_memory_seq_rm(self._memory, seq, p0, p1))

    def _withdraw(self, work: _Work) -> None:
        # What a step in progress still writes for it is dropped with it; the KV cells it
        # leaves are trimmed (under the lock) by the slot's next `eval`.
        with self._changed:
            if work in self._pending:
                self._pending.remove(work)
            work.done.set()
            self._changed.notify_all()

    # The decoder thread

    def _run(self) -> None:
        while True:
            self._step(self._gather())

    def _gather(self) -> list[_Work]:
        """The pending requests, once every slot of the last step is back or a moment passed."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._pending))
            deadline = time.monotonic() + self._gather_seconds
            while not self._expected <= {w.seq for w in self._pending}:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    break
            return list(self._pending)

    def _step(self, works: list[_Work]) -> None:
        plan = plan_step([len(w.tokens) - w.sent for w in works], self.n_batch)
        planned = [(w, n) for w, n in zip(works, plan, strict=True) if n > 0]
        outputs = self._fill(planned)
        status = self._decode(generating=self._batch.n_tokens == len(planned))
        self.steps, self.sequences = self.steps + 1, self.sequences + len(planned)
        self.decoded += self._batch.n_tokens
        if status != 0:  # fails the requests in this batch, not the decoder
            failed = RuntimeError(f"llama_decode returned {status}")
            self._finish_all([work for work, _ in planned], failed)
            return
        finished = []
        for (work, count), rows in zip(planned, outputs, strict=True):
            work.rows += [self._logits(i) for i in rows]
            work.sent += count
            if work.sent == len(work.tokens):
                finished.append(work)
        self._finish_all(finished, None)

    def _decode(self, generating: bool) -> int:
        """Decode the batch; `generating`: one token per sequence, no prompt in it."""
        began = time.monotonic()
        with self._lock:
            status = int(self._llama_cpp.llama_decode(self.ctx, self._batch))
        took = time.monotonic() - began
        self.decode_seconds += took
        if generating:  # the pace slots come back at; a prompt's long step is not it
            self._gather_seconds = max(GATHER_MIN_SECONDS, GATHER_SHARE * took)
        return status

    def _fill(self, planned: list[tuple[_Work, int]]) -> list[list[int]]:
        """Put the planned tokens in the batch; for each request, the rows whose logits it gets."""
        batch, outputs, i = self._batch, [], 0
        for work, count in planned:
            rows = []
            for offset in range(work.sent, work.sent + count):
                last = offset == len(work.tokens) - 1
                batch.token[i], batch.pos[i] = work.tokens[offset], work.n_past + offset
                batch.seq_id[i][0], batch.n_seq_id[i] = work.seq, 1
                batch.logits[i] = last or work.all_logits
                if last or work.all_logits:
                    rows.append(i)
                i += 1
            outputs.append(rows)
        batch.n_tokens = i
        return outputs

    def _logits(self, row: int) -> np.ndarray:
        pointer = self._llama_cpp.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _finish_all(self, works: list[_Work], error: BaseException | None) -> None:
        with self._changed:
            if error is None:  # a step's finished requests: their slots come back next
                self._expected = {work.seq for work in works}
            for work in works:
                if work in self._pending:
                    self._pending.remove(work)
                work.error = error
                work.done.set()
            self._changed.notify_all()
