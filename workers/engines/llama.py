"""The llama-cpp-python engine: one `llama_cpp.Llama`, used only from the engine thread.

Logprobs need the model loaded with `logits_all=True` (see `workers.api.logprobs`); without it a
request for them is a 400 that says how to enable it. Tool calling passes through to llama
(see `workers.api.tools`), with work-arounds for `chatml-function-calling`
(`workers.api.chatml_tools`).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from workers.api.chatml_tools import (
    CHATML_FUNCTION_CALLING,
    decides_tools,
    has_tool_calls,
    prepare_messages,
)
from workers.api.literal_text import LiteralContents
from workers.api.logprobs import wants_logprobs
from workers.api.params import ChatParams, CompletionParams, Prompt
from workers.api.required_call import REQUIRED, as_tool_call, call_schema
from workers.api.tools import tool_call_chunks
from workers.engines.base import (
    CancelToken,
    ContextLengthExceeded,
    EmbeddingsDisabled,
    Engine,
    EngineInfo,
    check_context,
    check_embedding_tokens,
    check_request_tokens,
    check_token_ids,
    min_prompt_tokens,
)
from workers.errors import invalid_request
from workers.gguf_header import Strings, gguf_metadata
from workers.wire import EmbeddingResult, RawChunk, StreamItem, Usage

__all__ = ["LlamaEngine", "llama_kwargs"]

# llama-cpp-python 0.3.36 raises ValueError with this text when the prompt fills the context.
_CONTEXT_ERROR = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")
_MEAN_POOLING = 1
# Decoded once before the worker says ready: several tokens, so one batch goes through the
# matrix-multiply kernels that a broken CPU build crashes in (ggml's AMX path on some Xeons).
WARM_UP_TEXT = "The quick brown fox jumps over the lazy dog, then runs far away."
_NO_IGNORE_EOS = "ignore_eos is served by generation models, not by a model loaded for embeddings"
_NO_LOGITS_ALL = (
    "This model was loaded without logits_all, which llama-cpp-python needs to compute "
    "logprobs: set `logits_all: true` in the model's llama options in config.yaml"
)


def llama_kwargs(given: dict[str, Any]) -> dict[str, Any]:
    """Defaults a worker needs that llama's own defaults get wrong for many replicas."""
    kwargs = dict(given)
    kwargs.pop("kv_unified", None)  # ours (workers.engines.loop.model), not a Llama argument
    kwargs.setdefault("verbose", False)
    # Otherwise prompt processing uses every core even with n_threads=1 (see llama-cpp notes).
    if "n_threads" in kwargs:
        kwargs.setdefault("n_threads_batch", kwargs["n_threads"])
    # Decoder GGUFs set no pooling, which yields one vector per token; OpenAI returns one.
    if kwargs.get("embedding"):
        kwargs.setdefault("pooling_type", _MEAN_POOLING)
    return kwargs


class _TokenMeter:
    """One request's cancel token, context check, `ignore_eos` and token counts.

    A slot of the engine loop (workers.engines.loop.slot) reads and reports to it directly. Over a
    plain `Llama` (an embedding model that also chats) it wraps `Llama.sample`, the one
    per-token call of every generation path there (in 0.3.36 `create_chat_completion` takes
    no `stopping_criteria`, and an exception raised in a `logits_processor` is swallowed by
    ctypes), so GenerationCancelled raised from it stops a generation within one token; and
    `Llama.generate`, which every path calls with the final prompt tokens.
    """

    def __init__(self, llama: Any, is_eog: Callable[[int], bool], wrap: bool) -> None:
        self._llama = llama
        self._is_eog = is_eog
        self.begin(CancelToken())
        if wrap:
            self._sample, self._generate = llama.sample, llama.generate
            setattr(llama, "sample", self._metered_sample)  # noqa: B010 - instance override
            setattr(llama, "generate", self._checked_generate)  # noqa: B010 - instance override

    def begin(
        self, cancel: CancelToken, max_tokens: int | None = None, ignore_eos: bool = False
    ) -> None:
        self.cancel = cancel
        self.ignore_eos = ignore_eos
        self._max_tokens = max_tokens
        self._prompt_tokens: int | None = None
        self._completion = 0
        self._last_eog = False

    def check_prompt(self, count: int) -> None:
        """A `max_tokens` that does not fit beside the prompt is rejected as OpenAI does, where
        llama would clamp it. Only the request's first prompt: chatml-function-calling's
        follow-up completions extend it with text the model wrote, part of the completion."""
        if self._max_tokens is not None:
            check_context(count, self._max_tokens, int(self._llama.n_ctx()))
            self._max_tokens = None

    def record(self, prompt_tokens: int, completion_tokens: int) -> None:
        """A generation's counts (the request's first prompt is its prompt)."""
        if self._prompt_tokens is None:
            self._prompt_tokens = prompt_tokens
        self._completion += completion_tokens

    def _checked_generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Any:
        self.check_prompt(len(tokens))
        return self._generate(tokens, *args, **kwargs)

    def _metered_sample(self, *args: Any, **kwargs: Any) -> int:
        self.cancel.raise_if_cancelled()
        if self._prompt_tokens is None:
            # The first sample follows the prompt's evaluation: n_tokens is the prompt length.
            self._prompt_tokens = int(self._llama.n_tokens)
        token = int(self._sample(*args, **kwargs))
        self._completion += 1
        self._last_eog = self._is_eog(token)
        return token

    def usage(self) -> Usage:
        # An end-of-generation token is sampled but not part of the completion.
        completion = self._completion - (1 if self._last_eog else 0)
        return Usage(self._prompt_tokens or 0, completion)


def _context_error(exc: ValueError, n_ctx: int) -> ContextLengthExceeded | None:
    # The message names the llama.cpp context's size, which a batching worker's slots share.
    match = _CONTEXT_ERROR.search(str(exc))
    return ContextLengthExceeded(int(match[1]), n_ctx) if match else None


def _batches(texts: list[str], counts: list[int], n_batch: int) -> Iterator[list[str]]:
    """The inputs in runs of at most `n_batch` tokens: what llama decodes in one call."""
    batch: list[str] = []
    tokens = 0
    for text, count in zip(texts, counts, strict=True):
        if batch and tokens + count > n_batch:
            yield batch
            batch, tokens = [], 0
        batch.append(text)
        tokens += count
    if batch:
        yield batch


def _longest_token_bytes(model_path: str, llama_cpp: Any, vocab: Any, n_vocab: int) -> int:
    """The most bytes one token of the vocabulary stands for (special tokens' text included), or
    more. From the GGUF header, the longest token text bounds it (a text is never shorter than
    its bytes: GPT-2's byte-level alphabet and SentencePiece's "▁" and "<0x0A>" only lengthen
    them), in milliseconds; else every token's piece is asked for: 1 s for Gemma 3's 262,144."""
    with contextlib.suppress(OSError, ValueError, struct.error):
        tokens = gguf_metadata(Path(model_path)).get("tokenizer.ggml.tokens")
        if isinstance(tokens, Strings) and tokens.entries == n_vocab:
            return max(tokens.longest, 1)
    buffer = ctypes.create_string_buffer(256)
    piece = llama_cpp.llama_token_to_piece
    # A negative length means the piece needs a bigger buffer: its size, negated.
    return max(abs(int(piece(vocab, token, buffer, 256, 0, True))) for token in range(n_vocab))


class LlamaEngine:
    kind = "llama"
    green = False

    def __init__(self, model_path: str, kwargs: dict[str, Any]) -> None:
        self.model_path = model_path
        self.kwargs = llama_kwargs(kwargs)
        self._llama: Any = None
        self._meter: _TokenMeter | None = None
        self._literal: LiteralContents | None = None
        self._max_token_bytes = 1
        self._looped = False  # serving a slot of the engine loop (set by `adopt`)

    def load(self) -> EngineInfo:
        import llama_cpp  # imported here: the stand-in never pays for it

        llama = llama_cpp.Llama(model_path=self.model_path, **self.kwargs)
        self.adopt(llama)
        return EngineInfo(
            n_ctx=int(llama.n_ctx()),
            n_gpu_layers=int(self.kwargs.get("n_gpu_layers", 0)),
            embedding=bool(self.kwargs.get("embedding", False)),
        )

    def adopt(self, llama: Any, max_token_bytes: int | None = None) -> LlamaEngine:
        """Serve with this loaded `Llama` (or a slot of one: workers.engines.loop.slot)."""
        import llama_cpp

        vocab = llama._model.vocab
        looped = hasattr(llama, "meter")  # a slot of the engine loop (workers.engines.loop.slot)
        self._looped = looped
        self._meter = _TokenMeter(
            llama, lambda t: bool(llama_cpp.llama_vocab_is_eog(vocab, t)), wrap=not looped
        )
        if looped:
            llama.meter = self._meter
        self._literal = LiteralContents(llama)
        if max_token_bytes is None:
            max_token_bytes = _longest_token_bytes(
                self.model_path, llama_cpp, vocab, int(llama.n_vocab())
            )
        self._max_token_bytes = max_token_bytes
        self._llama = llama
        return self

    def sibling(self, llama: Any) -> LlamaEngine:
        """An engine like this one serving another slot `llama` of the same model."""
        return LlamaEngine(self.model_path, self.kwargs).adopt(llama, self._max_token_bytes)

    @property
    def llama(self) -> Any:
        return self._llama

    def slot(self, index: int) -> Engine:
        return self

    def batching(self) -> dict[str, float] | None:
        return None  # one sequence: nothing batched

    def raise_if_cancelled(self) -> None:
        """Raise GenerationCancelled if the request now being served has been cancelled."""
        assert self._meter is not None, "model not loaded"
        self._meter.cancel.raise_if_cancelled()

    def warm_up(self) -> None:
        """Decode one multi-token batch, as llama-server does before it accepts requests."""
        llama = self._llama
        if self.kwargs.get("embedding"):
            llama.embed(WARM_UP_TEXT)
            return
        tokens = llama.tokenize(WARM_UP_TEXT.encode(), add_bos=True, special=False)
        llama.eval(tokens[: max(2, min(len(tokens), llama.n_ctx() - 1))])
        llama.reset()  # the next prompt starts from an empty context

    def _refuse_what_cannot_fit(self, texts: list[str], markup: int) -> None:
        """A 400 before the template and the tokenizer run, in O(size), for input too long for
        the context whatever its tokens: both are slow on huge input (the template quadratic
        in the number of messages), and nothing can stop them once started."""
        n_ctx = int(self._llama.n_ctx())
        least = min_prompt_tokens(texts, self._max_token_bytes, markup)
        if least >= n_ctx:
            raise ContextLengthExceeded(least, n_ctx, at_least=True)

    def _begin(
        self,
        cancel: CancelToken,
        options: dict[str, Any] | None = None,
        prompt: Prompt | None = None,
        param: str = "messages",
        ignore_eos: bool = False,
    ) -> _TokenMeter:
        assert self._meter is not None, "model not loaded"
        if options is not None:
            check_request_tokens(prompt, options, int(self._llama.n_vocab()), param)
        # A slot of the engine loop reads each token's logprobs off its own batch row; a plain
        # Llama (an embedding model) needs every position's logits kept for them.
        looped = self._looped
        plain_logprobs = options is not None and wants_logprobs(options) and not looped
        if plain_logprobs and not self.kwargs.get("logits_all"):
            raise invalid_request(_NO_LOGITS_ALL, "logprobs")
        if ignore_eos and not looped:
            raise invalid_request(_NO_IGNORE_EOS, "ignore_eos")
        cancel.raise_if_cancelled()
        max_tokens = None if options is None else options.get("max_tokens")
        self._meter.begin(cancel, max_tokens, ignore_eos)
        return self._meter

    def _run(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except TemplateError as exc:
            # The model's chat template rejected the conversation (e.g. roles not alternating).
            message = f"The chat template rejected the messages: {exc}"
            raise invalid_request(message, "messages") from exc
        except ValueError as exc:
            error = _context_error(exc, int(self._llama.n_ctx()))
            if error is None:
                raise
            raise error from exc

    def _stream(
        self, start: Callable[[], Iterator[RawChunk]], meter: _TokenMeter, cancel: CancelToken
    ) -> Iterator[StreamItem]:
        chunks = self._run(start)
        try:
            while True:
                chunk = self._run(lambda: next(chunks, None))
                if chunk is None:
                    break
                cancel.raise_if_cancelled()
                yield chunk
        finally:
            chunks.close()
        yield meter.usage()

    # Chat

    def _messages(self, params: ChatParams) -> list[dict[str, Any]]:
        """The messages llama renders: contents masked, so they are tokenized as text."""
        assert self._literal is not None, "model not loaded"
        messages = params.messages
        self._refuse_what_cannot_fit([str(m.get("content") or "") for m in messages], markup=1)
        if self.kwargs.get("chat_format") == CHATML_FUNCTION_CALLING:
            messages = prepare_messages(messages, bool(params.options.get("tools")))
        return self._literal.mask(messages)

    def _decides_tools(self, params: ChatParams) -> bool:
        return self.kwargs.get("chat_format") == CHATML_FUNCTION_CALLING and decides_tools(
            params.options
        )

    def _create_chat(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Any:
        return self._run(lambda: self._llama.create_chat_completion(messages=messages, **options))

    def chat(self, params: ChatParams, cancel: CancelToken) -> RawChunk:
        self._begin(cancel, params.options, ignore_eos=params.ignore_eos)
        messages = self._messages(params)
        if params.options.get("tool_choice") == REQUIRED:
            return self._required_call(messages, params.options)
        result: RawChunk = self._create_chat(messages, params.options)
        if self._decides_tools(params) and not has_tool_calls(result):
            # chatml-function-calling's "auto" message answer is always empty: answer again.
            result = self._create_chat(messages, {**params.options, "tool_choice": "none"})
        return result

    def chat_stream(self, params: ChatParams, cancel: CancelToken) -> Iterator[StreamItem]:
        meter = self._begin(cancel, params.options, ignore_eos=params.ignore_eos)
        messages = self._messages(params)
        if params.options.get("tool_choice") == REQUIRED:
            return self._replayed(self._required_call(messages, params.options))
        if self._decides_tools(params):
            return self._decided_stream(messages, params.options, cancel)
        options = {**params.options, "stream": True}
        return self._stream(lambda: iter(self._create_chat(messages, options)), meter, cancel)

    def _required_call(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> RawChunk:
        """A call to one of several tools: the answer constrained to their calls' union."""
        schema = call_schema(options["tools"])
        constrained = {
            **options,
            "tool_choice": "none",
            "response_format": {"type": "json_object", "schema": schema},
        }
        return as_tool_call(self._create_chat(messages, constrained))

    @staticmethod
    def _replayed(decided: RawChunk) -> Iterator[StreamItem]:
        """A finished tool-call answer as a stream, then its usage."""
        yield from tool_call_chunks(decided)
        usage = decided.get("usage") or {}
        yield Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    def _decided_stream(
        self, messages: list[dict[str, Any]], options: dict[str, Any], cancel: CancelToken
    ) -> Iterator[StreamItem]:
        """chatml-function-calling "auto": decide without streaming (workers.api.chatml_tools)."""
        decided: RawChunk = self._create_chat(messages, options)
        if has_tool_calls(decided):
            yield from self._replayed(decided)
            return
        meter = self._begin(cancel)
        answer = {**options, "tool_choice": "none", "stream": True}
        yield from self._stream(lambda: iter(self._create_chat(messages, answer)), meter, cancel)

    # Completions

    def _begin_completion(
        self, prompt: Prompt, params: CompletionParams, cancel: CancelToken
    ) -> _TokenMeter:
        assert self._literal is not None, "model not loaded"
        self._literal.clear()  # a completion prompt is the client's own text, markup and all
        if isinstance(prompt, str):
            self._refuse_what_cannot_fit([prompt], markup=0)
        return self._begin(cancel, params.options, prompt, "prompt", params.ignore_eos)

    def complete(self, prompt: Prompt, params: CompletionParams, cancel: CancelToken) -> RawChunk:
        self._begin_completion(prompt, params, cancel)
        result: RawChunk = self._run(
            lambda: self._llama.create_completion(prompt=prompt, **params.options)
        )
        return result

    def complete_stream(
        self, prompt: Prompt, params: CompletionParams, cancel: CancelToken
    ) -> Iterator[StreamItem]:
        meter = self._begin_completion(prompt, params, cancel)

        def start() -> Iterator[RawChunk]:
            return iter(self._llama.create_completion(prompt=prompt, stream=True, **params.options))

        return self._stream(start, meter, cancel)

    def embed(self, inputs: list[str] | list[list[int]], cancel: CancelToken) -> EmbeddingResult:
        if not self.kwargs.get("embedding"):
            raise EmbeddingsDisabled
        for item in inputs:
            if isinstance(item, list):
                check_token_ids(item, int(self._llama.n_vocab()), "input")
        # Llama.embed takes text only, so token inputs are detokenized first.
        texts = [self._text(i) for i in inputs]
        counts = self._check_embedding_lengths(texts)
        check_embedding_tokens(sum(counts))
        vectors: list[list[float]] = []
        for batch in _batches(texts, counts, int(self._llama.n_batch)):
            cancel.raise_if_cancelled()  # between batches: llama decodes one batch at a time
            vectors += [list(map(float, v)) for v in self._llama.embed(batch)]
        return EmbeddingResult(vectors, sum(counts))

    def _text(self, item: str | list[int]) -> str:
        if isinstance(item, str):
            return item
        return bytes(self._llama.detokenize(item)).decode("utf-8", errors="replace")

    def _check_embedding_lengths(self, texts: list[str]) -> list[int]:
        """Each input's tokens; Llama.embed silently truncates an input to n_batch, where
        OpenAI rejects it: so do we."""
        limit = min(int(self._llama.n_batch), int(self._llama.n_ctx()))
        counts = []
        for text in texts:
            self._refuse_what_cannot_fit([text], markup=0)  # before tokenizing a huge one
            count = len(self._llama.tokenize(text.encode("utf-8")))
            if count > limit:
                raise ContextLengthExceeded(count, limit)
            counts.append(count)
        return counts
