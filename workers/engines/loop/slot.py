"""One slot of a llama worker: a `llama_cpp.Llama` whose generation runs on the engine loop.

llama-cpp-python's chat path (templates, grammars for `json_schema` and tool calls, the tool
handlers) is Python written against one `Llama`, and it generates through one method:
`create_completion`. A slot is a copy of the loaded `Llama` that shares its model and
tokenizer and answers `create_completion` itself: it tokenizes, checks the context, builds the
request's sampler chain and submits a `Job` to the `EngineLoop`, then waits for what the loop
delivers and returns it in llama-cpp-python's own shapes (a completion, or its stream chunks).
So everything above it runs as before, and the decoding, sampling and detokenizing do not.

`meter` (set per request by `workers.engines.llama`) carries the request's cancel token, the
context check for its `max_tokens`, `ignore_eos`, and the token counts for its usage.
"""

from __future__ import annotations

import asyncio
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from llama_cpp import Llama

from workers.engines.base import ContextLengthExceeded
from workers.engines.loop.engine_loop import Delta, EngineLoop, Job, TokenLogprob
from workers.engines.loop.green import Inbox, in_green
from workers.engines.loop.sampling import SamplingSpec, build_chain
from workers.errors import invalid_request

__all__ = ["SlotLlama", "completion_logprobs"]

# How often a waiting slot looks at its request's cancel token (the loop also ends the job).
_POLL_SECONDS = 0.05
# Arguments llama-cpp-python's chat handlers pass that the loop has no use for: a formatter's
# stop-token criteria (the loop stops at every end-of-generation token) and the model name.
_IGNORED = ("stopping_criteria", "model", "suffix", "tfs_z", "stream")


def completion_logprobs(tokens: tuple[TokenLogprob, ...], offset: int) -> dict[str, Any]:
    """llama-cpp-python's completion logprobs for `tokens`, the first at text `offset`: the
    top N and the sampled token, as OpenAI documents for that endpoint."""
    offsets, at = [], offset
    for token in tokens:
        offsets.append(at)
        at += len(token.text)
    return {
        "tokens": [t.text for t in tokens],
        "text_offset": offsets,
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [
            None if t.logprob is None else {**dict(t.top), t.text: t.logprob} for t in tokens
        ],
    }


class SlotLlama(Llama):
    """A `Llama` that is one slot of a worker; made by `SlotLlama.of`, never loaded."""

    meter: Any = None
    _loop: EngineLoop
    _seq: int

    @classmethod
    def of(cls, base: Llama, loop: EngineLoop, seq: int, n_ctx: int) -> SlotLlama:
        """A slot sharing `base`'s model, tokenizer and chat handlers: sequence `seq`."""
        slot: SlotLlama = cls.__new__(cls)
        slot.__dict__.update(base.__dict__)
        slot._loop, slot._seq, slot._n_ctx = loop, seq, n_ctx
        return slot

    def n_ctx(self) -> int:
        return self._n_ctx

    def close(self) -> None:
        """The model and the context belong to the loaded `Llama`, not to its slots."""

    def __del__(self) -> None:
        """As close: nothing of a slot's own needs freeing."""

    def create_completion(  # type: ignore[override]
        self,
        prompt: str | list[int],
        max_tokens: int | None = 16,
        stop: str | list[str] | None = None,
        logprobs: int | None = None,
        echo: bool = False,
        logits_processor: Any = None,
        grammar: Any = None,
        **options: Any,
    ) -> Any:
        if logits_processor is not None:
            raise invalid_request("logits processors are not supported by this engine")
        stream = bool(options.get("stream"))
        tokens = self._prompt_tokens(prompt)
        if len(tokens) >= self._n_ctx:
            raise ContextLengthExceeded(len(tokens), self._n_ctx)
        self.meter.check_prompt(len(tokens))
        job = self._job(
            tokens, max_tokens, stop, logprobs, grammar, options, echo and logprobs is not None
        )
        echoed = self._echo_text(prompt, tokens) if echo else ""
        head = {
            "id": f"cmpl-{uuid.uuid4()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_path,
        }
        answer = _Answer(head, echoed, len(tokens), logprobs is not None)
        if stream:
            return self._chunks(answer, self._run(job))
        return self._whole(answer, self._run(job))

    def _prompt_tokens(self, prompt: str | list[int]) -> list[int]:
        """As `Llama.create_completion`: token ids as given; text with the model's BOS and
        its special tokens read as such (the chat template's markup, a client's own prompt)."""
        if isinstance(prompt, list):
            return list(prompt) or [self.token_bos()]
        bos = [self.token_bos()] if self._model.add_bos_token() and self.token_bos() >= 0 else []
        text = self.tokenize(prompt.encode(), add_bos=False, special=True) if prompt else []
        return (bos + text) or [max(self.token_bos(), 0)]

    def _echo_text(self, prompt: str | list[int], tokens: list[int]) -> str:
        if isinstance(prompt, str):
            return prompt
        return bytes(self.detokenize(tokens)).decode("utf-8", errors="replace")

    def _job(
        self,
        tokens: list[int],
        max_tokens: int | None,
        stop: str | list[str] | None,
        logprobs: int | None,
        grammar: Any,
        options: dict[str, Any],
        echo_logprobs: bool,
    ) -> Job:
        for name in _IGNORED:
            options.pop(name, None)
        spec = SamplingSpec.of({**options, "grammar": grammar}, self._seed, self.last_n_tokens_size)
        if self.meter.ignore_eos:
            spec = replace(spec, banned=self._loop.end_tokens)
        try:
            chain = build_chain(spec, self._model.vocab, self._n_vocab)
        except ValueError as exc:
            raise invalid_request(f"The request's grammar was refused: {exc}") from exc
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        limit = max_tokens if max_tokens is not None and max_tokens > 0 else None
        return Job(
            self._seq,
            tokens,
            chain,
            lambda _: None,
            limit,
            stops,
            logprobs,
            argmax=spec.plain_greedy,
            banned=frozenset(spec.banned),
            echo_logprobs=echo_logprobs,
        )

    def _run(self, job: Job) -> Iterator[Delta]:
        """Submit `job` and yield what the loop delivers, until its end; a cancelled request
        (or a caller that stops reading) abandons the job, which the loop then drops. Green
        code (workers.engines.loop.green) waits on the event loop, which the loop hands each step's
        text to at once; a thread (the warm-up, the benchmark's in-process clients) waits on
        a queue."""
        take = self._green_inbox(job) if in_green() else self._thread_inbox(job)
        self._loop.submit(job)
        try:
            while True:
                self.meter.cancel.raise_if_cancelled()
                delta = take()
                if delta is None:
                    continue
                if delta.error is not None:
                    raise delta.error
                yield delta
                if delta.finish is not None:
                    return
        finally:
            job.abandoned.set()

    @staticmethod
    def _green_inbox(job: Job) -> Callable[[], Delta | None]:
        inbox: Inbox[Delta] = Inbox()
        job.deliver, job.loop = inbox.put, asyncio.get_running_loop()
        return inbox.take

    @staticmethod
    def _thread_inbox(job: Job) -> Callable[[], Delta | None]:
        inbox: queue.SimpleQueue[Delta] = queue.SimpleQueue()
        job.deliver = inbox.put

        def take() -> Delta | None:
            try:
                return inbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                return None  # a moment to look at the cancel token

        return take

    def _chunks(self, answer: _Answer, deltas: Iterator[Delta]) -> Iterator[dict[str, Any]]:
        offset, head = len(answer.echoed), answer.head
        if answer.echoed:
            # With logprobs, the loop's first delta is the prompt's own.
            prompt = next(deltas).prompt if answer.want_logprobs else ()
            logprobs = answer.logprobs(prompt, 0) if prompt else None
            yield {**head, "choices": [_choice(answer.echoed, logprobs, None)]}
        for delta in deltas:
            if delta.text or delta.logprobs:
                logprobs = answer.logprobs(delta.logprobs, offset)
                yield {**head, "choices": [_choice(delta.text, logprobs, None)]}
                offset += len(delta.text)
            if delta.finish is not None:
                self.meter.record(answer.prompt_tokens, delta.completion_tokens)
                yield {**head, "choices": [_choice("", None, delta.finish)]}

    def _whole(self, answer: _Answer, deltas: Iterator[Delta]) -> dict[str, Any]:
        texts, finish, completion = [answer.echoed], "stop", 0
        tokens: list[TokenLogprob] = []
        for delta in deltas:
            texts.append(delta.text)
            tokens += delta.prompt + delta.logprobs
            if delta.finish is not None:
                finish, completion = delta.finish, delta.completion_tokens
        self.meter.record(answer.prompt_tokens, completion)
        echoed_logprobs = bool(answer.echoed and tokens and tokens[0].logprob is None)
        logprobs = answer.logprobs(tuple(tokens), 0 if echoed_logprobs else len(answer.echoed))
        prompt = answer.prompt_tokens
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        choice = _choice("".join(texts), logprobs, finish)
        return {**answer.head, "choices": [choice], "usage": usage}


@dataclass(frozen=True)
class _Answer:
    """What a completion's chunks share: its head (id, object, created, model), the prompt
    it echoes (or ""), the prompt's tokens, and whether logprobs were asked for."""

    head: dict[str, Any]
    echoed: str
    prompt_tokens: int
    want_logprobs: bool

    def logprobs(self, tokens: tuple[TokenLogprob, ...], offset: int) -> dict[str, Any] | None:
        return completion_logprobs(tokens, offset) if self.want_logprobs else None


def _choice(text: str, logprobs: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}
