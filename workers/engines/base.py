"""The engine protocol: what the HTTP server needs from a model, llama or stand-in.

Every method blocks and is called on the worker's single engine thread. Engines return
llama-cpp-python's raw shapes (its gaps included); `workers.api.shaping` makes them OpenAI-valid,
so both engines go through exactly the same shaping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from workers.api.params import ChatParams, CompletionParams, Prompt
from workers.errors import invalid_request
from workers.wire import EmbeddingResult, RawChunk, StreamItem

__all__ = [
    "MAX_EMBEDDING_TOKENS",
    "CancelToken",
    "ContextLengthExceeded",
    "EmbeddingsDisabled",
    "Engine",
    "EngineInfo",
    "GenerationCancelled",
    "Model",
    "check_context",
    "check_embedding_tokens",
    "check_request_tokens",
    "check_token_ids",
    "min_prompt_tokens",
]


@dataclass(frozen=True)
class EngineInfo:
    n_ctx: int
    n_gpu_layers: int
    embedding: bool


class GenerationCancelled(Exception):
    """Raised on the engine thread when the request's client has gone away."""


class ContextLengthExceeded(Exception):
    """The prompt, or the prompt plus the requested `max_tokens`, does not fit the context.

    `completion_tokens` is the requested max_tokens, or None when the prompt alone is too
    long. Messages are OpenAI's, worded for the endpoint's input ("messages", "prompt")."""

    def __init__(
        self,
        prompt_tokens: int,
        n_ctx: int,
        completion_tokens: int | None = None,
        at_least: bool = False,  # prompt_tokens is a lower bound, counted without tokenizing
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.completion_tokens = completion_tokens
        self.at_least = at_least
        super().__init__(self.message())

    def message(self, input_name: str = "messages") -> str:
        head = f"This model's maximum context length is {self.n_ctx} tokens."
        if self.completion_tokens is None:
            return (
                f"{head} However, your {input_name} resulted in "
                f"{'at least ' if self.at_least else ''}{self.prompt_tokens} tokens. "
                f"Please reduce the length of the {input_name}."
            )
        total = self.prompt_tokens + self.completion_tokens
        return (
            f"{head} However, you requested {total} tokens ({self.prompt_tokens} in the "
            f"{input_name}, {self.completion_tokens} in the completion). Please reduce the "
            f"length of the {input_name} or completion."
        )


def check_token_ids(ids: Iterable[int], n_vocab: int, param: str) -> None:
    """Token ids past the vocabulary make llama.cpp fail (a 500) or crash: a 400 instead."""
    for token in ids:
        if token >= n_vocab:
            message = (
                f"Invalid token id {token} in '{param}': this model's vocabulary has "
                f"{n_vocab} tokens (ids 0 to {n_vocab - 1})"
            )
            raise invalid_request(message, param)


def check_request_tokens(
    prompt: Prompt | None, options: dict[str, Any], n_vocab: int, param: str
) -> None:
    """The token ids a request can carry: a prompt given as tokens, and logit_bias keys."""
    if isinstance(prompt, list):
        check_token_ids(prompt, n_vocab, param)
    check_token_ids(options.get("logit_bias") or {}, n_vocab, "logit_bias")


def min_prompt_tokens(texts: Iterable[str], max_token_bytes: int, markup: int = 0) -> int:
    """A lower bound on the tokens `texts` need, in O(size) and without tokenizing: one token
    covers at most `max_token_bytes` bytes (so at most that many characters), and each text
    brings at least `markup` tokens of template around it (a chat message: its role marker)."""
    return sum(markup + -(-len(text) // max_token_bytes) for text in texts)


# OpenAI's limit on the tokens of all inputs of one embeddings request.
MAX_EMBEDDING_TOKENS = 300_000


def check_embedding_tokens(total: int) -> None:
    if total > MAX_EMBEDDING_TOKENS:
        message = (
            f"The inputs hold {total} tokens; one embeddings request may hold at most "
            f"{MAX_EMBEDDING_TOKENS}. Send them in several requests."
        )
        raise invalid_request(message, "input")


def check_context(prompt_tokens: int, max_tokens: int | None, n_ctx: int) -> None:
    """OpenAI's rule, for both engines: the prompt must leave room for one token, and an
    explicit max_tokens must fit beside it (llama-cpp-python would silently clamp it).
    Without max_tokens, generation runs to the end of the context as before."""
    if prompt_tokens >= n_ctx:
        raise ContextLengthExceeded(prompt_tokens, n_ctx)
    if max_tokens is not None and prompt_tokens + max_tokens > n_ctx:
        raise ContextLengthExceeded(prompt_tokens, n_ctx, max_tokens)


class EmbeddingsDisabled(Exception):
    """The model was loaded without `embedding: true`."""


class CancelToken:
    """A stop flag set by the event loop and read by the engine thread between tokens."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise GenerationCancelled

    def sleep(self, seconds: float) -> None:
        """Wait, waking at once on cancel (the stand-in's stand-in for computing a token)."""
        if self._event.wait(seconds):
            raise GenerationCancelled


class Engine(Protocol):
    """Serves requests: each call blocks, on the engine thread of the slot it serves."""

    kind: str

    def chat(self, params: ChatParams, cancel: CancelToken) -> RawChunk: ...

    def chat_stream(self, params: ChatParams, cancel: CancelToken) -> Iterator[StreamItem]: ...

    def complete(
        self, prompt: Prompt, params: CompletionParams, cancel: CancelToken
    ) -> RawChunk: ...

    def complete_stream(
        self, prompt: Prompt, params: CompletionParams, cancel: CancelToken
    ) -> Iterator[StreamItem]: ...

    def embed(self, inputs: list[str] | list[list[int]], cancel: CancelToken) -> EmbeddingResult:
        """Check `cancel` between inputs (or small batches of them)."""
        ...


class Model(Protocol):
    """What a worker loads: a model and the engine of each of its slots."""

    kind: str
    # True: its slots' calls wait on the event loop (workers.engines.loop.green) and run there;
    # False: each blocks, on a thread of the slot's own (workers.runner.EngineThread).
    green: bool

    def load(self) -> EngineInfo: ...

    def warm_up(self) -> None:
        """Compute once, on a batch of several tokens, before the worker says it is ready."""
        ...

    def slot(self, index: int) -> Engine:
        """The engine serving slot `index`: itself, unless each slot has its own (batching)."""
        ...

    def batching(self) -> dict[str, float] | None:
        """How the slots have batched (workers.engines.loop.engine_loop), or None: no batching."""
        ...
