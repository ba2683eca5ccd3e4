"""A stand-in engine: canned tokens at a set speed, no llama import.

It speaks the same engine protocol (and llama-cpp-python's raw shapes, gaps included), so a
stand-in worker is a real worker process on the real HTTP path: scheduler, load, failure and
benchmark tests use it without paying for a model.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from workers.api.params import ChatParams, CompletionParams, Prompt
from workers.api.tools import tool_call_chunks
from workers.engines.base import (
    CancelToken,
    EmbeddingsDisabled,
    Engine,
    EngineInfo,
    check_context,
    check_embedding_tokens,
    check_request_tokens,
    check_token_ids,
)
from workers.wire import EmbeddingResult, RawChunk, StreamItem, Usage

__all__ = ["StandinEngine", "StandinOptions"]


@dataclass(frozen=True)
class StandinOptions:
    token_delay: float = 0.02  # seconds per generated token
    tokens: int = 16  # tokens per answer, before max_tokens
    load_seconds: float = 0.0
    embedding_dim: int = 8  # 0 disables embeddings
    n_ctx: int = 2048
    n_vocab: int = 49152  # token ids at or past this are a 400, as with a real model
    fail_load: str | None = None  # load raises this message (failed-start tests)
    error_after_tokens: int | None = None  # raise mid-generation (in-stream error tests)
    exit_after_tokens: int | None = None  # os._exit mid-generation (crash tests)
    crash_on_warmup: bool = False  # SIGSEGV during warm-up, as a broken llama.cpp build does
    crash_on_request: bool = False  # SIGSEGV on the first generated token
    prefill_seconds: float = 0.0  # work before the first token that no cancel can interrupt

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StandinOptions:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown stand-in options: {unknown}")
        return cls(**data)


def _crash() -> None:
    """Die of SIGSEGV, as native code that reads a bad address does."""
    os.kill(os.getpid(), signal.SIGSEGV)


def _words(text: str) -> int:
    return len(text.split())


class StandinEngine:
    kind = "standin"
    green = False

    def __init__(self, options: StandinOptions) -> None:
        self.options = options
        self._lock = threading.Lock()  # the slots' threads count tokens together
        self._tokens = 0

    def load(self) -> EngineInfo:
        time.sleep(self.options.load_seconds)
        if self.options.fail_load:
            raise RuntimeError(self.options.fail_load)
        return EngineInfo(
            n_ctx=self.options.n_ctx, n_gpu_layers=0, embedding=self.options.embedding_dim > 0
        )

    def slot(self, index: int) -> Engine:
        return self  # one stand-in serves every slot: it holds no per-request state

    def batching(self) -> dict[str, float] | None:
        """The engine counters a llama worker reports (workers.engines.loop.engine_loop), as if each
        stand-in token were a decode step of one sequence: dashboards see them move."""
        with self._lock:
            steps, seconds = self._tokens, self._tokens * self.options.token_delay
        return {
            "steps": steps,
            "sequences": steps,
            "decoded_tokens": steps,
            "generated_tokens": steps,
            "mean_sequences": 1.0 if steps else 0.0,
            "decode_seconds": seconds,
        }

    def warm_up(self) -> None:
        if self.options.crash_on_warmup:
            _crash()

    # Generation: "tok0 tok1 ...", one word per token, deterministic.

    def _budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """How many tokens to produce; every generation starts here, so the prefill is here."""
        check_context(prompt_tokens, max_tokens, self.options.n_ctx)
        # Like a template, a tokenizer or a prompt evaluation: it runs to its end, client or not.
        time.sleep(self.options.prefill_seconds)
        budget = min(self.options.tokens, self.options.n_ctx - prompt_tokens)
        return budget if max_tokens is None else min(budget, max_tokens)

    def _pieces(self, count: int, cancel: CancelToken) -> Iterator[str]:
        for i in range(count):
            cancel.sleep(self.options.token_delay)
            if self.options.error_after_tokens is not None and i >= self.options.error_after_tokens:
                raise RuntimeError("stand-in: injected generation error")
            if self.options.exit_after_tokens is not None and i >= self.options.exit_after_tokens:
                os._exit(17)
            if self.options.crash_on_request:
                _crash()
            with self._lock:
                self._tokens += 1
            yield f"tok{i}" if i == 0 else f" tok{i}"

    def _finish(self, produced: int, max_tokens: int | None) -> str:
        return "length" if max_tokens is not None and produced >= max_tokens else "stop"

    def _chat_prompt_tokens(self, params: ChatParams) -> int:
        return sum(_words(m.get("content") or "") + 1 for m in params.messages)

    def _completion_prompt_tokens(self, prompt: Prompt) -> int:
        return len(prompt) if isinstance(prompt, list) else _words(prompt)

    def chat(self, params: ChatParams, cancel: CancelToken) -> RawChunk:
        check_request_tokens(None, params.options, self.options.n_vocab, "messages")
        prompt_tokens = self._chat_prompt_tokens(params)
        call = _forced_call(params.options)
        if call is not None:
            return _tool_call_answer(call, Usage(prompt_tokens, 1))
        max_tokens = params.options.get("max_tokens")
        count = self._budget(prompt_tokens, max_tokens)
        text = "".join(self._pieces(count, cancel))
        return {
            "id": f"chatcmpl-{uuid.uuid4()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "standin",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": self._finish(count, max_tokens),
                }
            ],
            "usage": _usage_dict(Usage(prompt_tokens, count)),
        }

    def chat_stream(self, params: ChatParams, cancel: CancelToken) -> Iterator[StreamItem]:
        check_request_tokens(None, params.options, self.options.n_vocab, "messages")
        prompt_tokens = self._chat_prompt_tokens(params)
        call = _forced_call(params.options)
        if call is not None:
            yield from tool_call_chunks(_tool_call_answer(call, Usage(prompt_tokens, 1)))
            yield Usage(prompt_tokens, 1)
            return
        max_tokens = params.options.get("max_tokens")
        count = self._budget(prompt_tokens, max_tokens)
        yield _chat_chunk({"role": "assistant"}, None)
        for piece in self._pieces(count, cancel):
            yield _chat_chunk({"content": piece}, None)
        yield _chat_chunk({}, self._finish(count, max_tokens))
        yield Usage(prompt_tokens, count)

    def complete(self, prompt: Prompt, params: CompletionParams, cancel: CancelToken) -> RawChunk:
        check_request_tokens(prompt, params.options, self.options.n_vocab, "prompt")
        prompt_tokens = self._completion_prompt_tokens(prompt)
        max_tokens = params.options.get("max_tokens")
        count = self._budget(prompt_tokens, max_tokens)
        text = "".join(self._pieces(count, cancel))
        chunk = _completion_chunk(text, self._finish(count, max_tokens))
        chunk["usage"] = _usage_dict(Usage(prompt_tokens, count))
        return chunk

    def complete_stream(
        self, prompt: Prompt, params: CompletionParams, cancel: CancelToken
    ) -> Iterator[StreamItem]:
        check_request_tokens(prompt, params.options, self.options.n_vocab, "prompt")
        prompt_tokens = self._completion_prompt_tokens(prompt)
        max_tokens = params.options.get("max_tokens")
        count = self._budget(prompt_tokens, max_tokens)
        for piece in self._pieces(count, cancel):
            yield _completion_chunk(piece, None)
        yield _completion_chunk("", self._finish(count, max_tokens))
        yield Usage(prompt_tokens, count)

    def embed(self, inputs: list[str] | list[list[int]], cancel: CancelToken) -> EmbeddingResult:
        if self.options.embedding_dim <= 0:
            raise EmbeddingsDisabled
        for item in inputs:
            if isinstance(item, list):
                check_token_ids(item, self.options.n_vocab, "input")
        tokens = sum(len(i) if isinstance(i, list) else _words(i) for i in inputs)
        check_embedding_tokens(tokens)
        vectors = []
        for item in inputs:
            cancel.sleep(self.options.token_delay)  # one "token" of work per input
            vectors.append(self._vector(repr(item)))
        return EmbeddingResult(vectors, tokens)

    def _vector(self, text: str) -> list[float]:
        """A deterministic unit vector derived from the text."""
        digest = hashlib.sha256(text.encode()).digest()
        raw = [digest[i % len(digest)] - 127.5 for i in range(self.options.embedding_dim)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        return [x / norm for x in raw]


def _forced_call(options: dict[str, Any]) -> dict[str, Any] | None:
    """A forced tool call's canned answer: the named tool (or, if required, the first), `{}`."""
    choice = options.get("tool_choice")
    if choice == "required":
        name = options["tools"][0]["function"]["name"]
    elif isinstance(choice, dict):
        name = choice["function"]["name"]
    else:
        return None
    return {"id": "call_standin", "type": "function", "function": {"name": name, "arguments": "{}"}}


def _tool_call_answer(call: dict[str, Any], usage: Usage) -> RawChunk:
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "standin",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        ],
        "usage": _usage_dict(usage),
    }


def _usage_dict(usage: Usage) -> dict[str, int]:
    total = usage.prompt_tokens + usage.completion_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
    }


def _chat_chunk(delta: dict[str, Any], finish_reason: str | None) -> RawChunk:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "standin",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _completion_chunk(text: str, finish_reason: str | None) -> RawChunk:
    return {
        "id": "cmpl-standin",
        "object": "text_completion",
        "created": int(time.time()),
        "model": "standin",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }
