"""The engine protocol: what the HTTP server needs from a model, llama or stand-in.

Every method blocks and is called on the worker's single engine thread. Engines return
llama-cpp-python's raw shapes (its gaps included); `workers.shaping` makes them OpenAI-valid,
so both engines go through exactly the same shaping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from workers.params import ChatParams, CompletionParams, Prompt

__all__ = [
    "CancelToken",
    "ContextLengthExceeded",
    "EmbeddingResult",
    "EmbeddingsDisabled",
    "Engine",
    "EngineInfo",
    "GenerationCancelled",
    "RawChunk",
    "StreamItem",
    "Usage",
]

RawChunk = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


# A stream yields raw chunks and, last, the Usage of the whole generation.
StreamItem = RawChunk | Usage


@dataclass(frozen=True)
class EngineInfo:
    n_ctx: int
    n_gpu_layers: int
    embedding: bool


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


class GenerationCancelled(Exception):
    """Raised on the engine thread when the request's client has gone away."""


class ContextLengthExceeded(Exception):
    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens, "
            f"but the prompt has {prompt_tokens} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


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
    kind: str

    def load(self) -> EngineInfo: ...

    def chat(self, params: ChatParams, cancel: CancelToken) -> RawChunk: ...

    def chat_stream(self, params: ChatParams, cancel: CancelToken) -> Iterator[StreamItem]: ...

    def complete(
        self, prompt: Prompt, params: CompletionParams, cancel: CancelToken
    ) -> RawChunk: ...

    def complete_stream(
        self, prompt: Prompt, params: CompletionParams, cancel: CancelToken
    ) -> Iterator[StreamItem]: ...

    def embed(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult: ...
