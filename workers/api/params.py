"""Parse OpenAI request bodies into what an engine needs, rejecting bad input with a 400.

Unknown fields are ignored (clients send many we have no use for); known fields with the
wrong type are rejected, so nothing malformed reaches llama.cpp and turns into a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from workers.api.logprobs import parse_chat_logprobs, parse_completion_logprobs
from workers.api.tools import check_message_tools, parse_tools
from workers.errors import invalid_request
from workers.wire import MAX_CHOICES

__all__ = [
    "ChatParams",
    "CompletionParams",
    "EmbeddingParams",
    "Prompt",
    "parse_chat",
    "parse_completion",
    "parse_embedding",
]

_N = TypeVar("_N", int, float)

# A completion prompt as llama-cpp-python takes it: text or token ids.
Prompt = str | list[int]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# OpenAI's documented ranges (min_p is llama's, a probability like top_p). A value outside
# is a 400 with OpenAI's own wording and code, e.g. "decimal_above_max_value".
_NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "min_p": (0.0, 1.0),
}
_INT64 = (-(2**63), 2**63 - 1)  # OpenAI's `seed` is an int64
_TOP_K_MAX = 2**31 - 1  # llama.cpp's top_k is an int32
MAX_STOP = 4  # OpenAI: "Up to 4 sequences where the API will stop generating"
# Choices in one answer (n, x prompts for completions): each is a whole generation on the one
# model copy, one after another, so a large n holds the replica for that many answers.
LOGIT_BIAS_LIMIT = 100.0  # OpenAI: "values from -100 to 100"
_TOKEN_ID = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class ChatParams:
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    # Keyword arguments for Llama.create_chat_completion (already in llama's vocabulary).
    options: dict[str, Any] = field(default_factory=dict)
    top_logprobs: int | None = None  # None: no logprobs requested
    legacy_functions: bool = False  # answer tool calls as `function_call` (see workers.api.tools)
    n: int = 1  # choices to generate, one after another
    ignore_eos: bool = False  # generate to max_tokens past end tokens (llama-server's, vLLM's)


@dataclass(frozen=True)
class CompletionParams:
    prompts: list[Prompt]
    stream: bool = False
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    n: int = 1  # choices per prompt
    ignore_eos: bool = False


@dataclass(frozen=True)
class EmbeddingParams:
    inputs: list[str] | list[list[int]]
    encoding_format: str = "float"
    dimensions: int | None = None  # values per vector, if the client asked (see embedding_policy)


def parse_chat(body: Mapping[str, Any]) -> ChatParams:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' must be a non-empty array of messages", "messages")
    options = _sampling_options(body, default_max_tokens=None)
    response_format = _response_format(body.get("response_format"))
    if response_format is not None:
        options["response_format"] = response_format
    logprob_options, top_logprobs = parse_chat_logprobs(body)
    tools = parse_tools(body)
    stream, include_usage = _stream_flags(body)
    return ChatParams(
        [_message(m, i) for i, m in enumerate(messages)],
        stream,
        include_usage,
        {**options, **logprob_options, **tools.options},
        top_logprobs,
        tools.legacy,
        _choices(body),
        _ignore_eos(body),
    )


def parse_completion(body: Mapping[str, Any]) -> CompletionParams:
    if "prompt" not in body:
        raise invalid_request("'prompt' is required", "prompt")
    prompts = _prompts(body["prompt"])
    # OpenAI's default for the legacy completions endpoint is 16 tokens.
    options = _sampling_options(body, default_max_tokens=16)
    echo = body.get("echo")
    if echo is not None:
        options["echo"] = _require(echo, bool, "echo", "a boolean")
    options.update(parse_completion_logprobs(body))
    stream, include_usage = _stream_flags(body)
    n = _choices(body)
    if len(prompts) * n > MAX_CHOICES:
        raise invalid_request(
            f"{len(prompts)} prompts x n={n} would be {len(prompts) * n} "
            f"choices; at most {MAX_CHOICES} here",
            "n",
        )
    return CompletionParams(prompts, stream, include_usage, options, n, _ignore_eos(body))


def _ignore_eos(body: Mapping[str, Any]) -> bool:
    """llama-server's and vLLM's extension: end tokens are banned, so the answer runs to
    `max_tokens` (benchmarks need equal work from every server)."""
    value = body.get("ignore_eos")
    return False if value is None else bool(_require(value, bool, "ignore_eos", "a boolean"))


def _choices(body: Mapping[str, Any]) -> int:
    """`n`: how many choices to generate (they run one after another on one model copy)."""
    n = body.get("n")
    if n is None:
        return 1
    n = _integer(n, "n")
    if not 1 <= n <= MAX_CHOICES:
        raise invalid_request(f"'n' must be from 1 to {MAX_CHOICES} here", "n")
    return n


def parse_embedding(body: Mapping[str, Any]) -> EmbeddingParams:
    if "input" not in body:
        raise invalid_request("'input' is required", "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and not (
        isinstance(dimensions, int) and not isinstance(dimensions, bool) and dimensions > 0
    ):
        raise invalid_request("'dimensions' must be a positive integer", "dimensions")
    return EmbeddingParams(_embedding_inputs(body["input"]), fmt, dimensions)


def _message(message: Any, index: int) -> dict[str, Any]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_request(f"{param} must be an object", param)
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise invalid_request(f"{param}.role must be one of {sorted(_ROLES)}", f"{param}.role")
    content = _content(message.get("content"), f"{param}.content")
    check_message_tools(message, param)
    if content is None:
        # Only an assistant turn (e.g. one that called tools) may lack content; templates
        # concatenate it, so it becomes "" rather than None.
        if role != "assistant":
            raise invalid_request(f"{param}.content is required", f"{param}.content")
        content = ""
    # Keep only what chat templates read: extra keys (name, tool_call_id...) pass through.
    return {**message, "role": role, "content": content}


def _content(content: Any, param: str) -> str | None:
    """Flatten OpenAI's list-of-parts content to text: chat templates expect a string."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_request(f"{param} must be a string or an array of parts", param)
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise invalid_request(f"{param}: only text parts are supported", param)
        texts.append(_require(part.get("text"), str, param, "text"))
    return "".join(texts)


def _sampling_options(body: Mapping[str, Any], default_max_tokens: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    max_tokens = _max_tokens(body, default_max_tokens)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    for key, (low, high) in _NUMBER_RANGES.items():
        if body.get(key) is not None:
            options[key] = _bounded(_number(body[key], key), key, low, high, "decimal")
    repeat_penalty = body.get("repeat_penalty")
    if repeat_penalty is not None:
        options["repeat_penalty"] = _number(repeat_penalty, "repeat_penalty")
        if options["repeat_penalty"] <= 0:
            raise invalid_request("'repeat_penalty' must be above 0", "repeat_penalty")
    if body.get("seed") is not None:
        options["seed"] = _bounded(_integer(body["seed"], "seed"), "seed", *_INT64, "integer")
    if body.get("top_k") is not None:
        top_k = _integer(body["top_k"], "top_k")
        options["top_k"] = _bounded(top_k, "top_k", 0, _TOP_K_MAX, "integer")
    stop = _stop(body.get("stop"))
    if stop:
        options["stop"] = stop
    logit_bias = _logit_bias(body.get("logit_bias"))
    if logit_bias:
        options["logit_bias"] = logit_bias
    return options


def _max_tokens(body: Mapping[str, Any], default: int | None) -> int | None:
    # max_completion_tokens is the newer name for the same limit; it wins when both are set.
    # Above the context it is rejected by the engine, which knows the prompt's length.
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            tokens = _integer(value, key)
            if tokens < 1:
                raise invalid_request(f"'{key}' must be at least 1", key)
            return tokens
    return default


def _number(value: Any, param: str) -> float:
    """A finite JSON number as a float (1e400 parses as inf; a 400-digit int overflows)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_request(f"'{param}' must be a number", param)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise invalid_request(f"'{param}' must be a finite number", param)
    return number


def _bounded(value: _N, param: str, low: float, high: float, kind: str) -> _N:
    """OpenAI's range errors: the same message and code as api.openai.com sends."""
    if value > high:
        message = (
            f"Invalid '{param}': {kind} above maximum value. "
            f"Expected a value <= {_show(high)}, but got {_show(value)} instead."
        )
        raise invalid_request(message, param, f"{kind}_above_max_value")
    if value < low:
        message = (
            f"Invalid '{param}': {kind} below minimum value. "
            f"Expected a value >= {_show(low)}, but got {_show(value)} instead."
        )
        raise invalid_request(message, param, f"{kind}_below_min_value")
    return value


def _show(number: float) -> str:
    """2.0 as 2, as OpenAI writes it (ints as they are: a huge one would overflow float)."""
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)


def _integer(value: Any, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"'{param}' must be an integer", param)
    return value


def _require(value: Any, kind: type, param: str, what: str) -> Any:
    if not isinstance(value, kind):
        raise invalid_request(f"'{param}' must be {what}", param)
    return value


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid_request("'stop' must be a string or an array of strings", "stop")
    if len(stop) > MAX_STOP:
        message = (
            f"Invalid 'stop': array too long. Expected an array with maximum length "
            f"{MAX_STOP}, but got an array with length {len(stop)} instead."
        )
        raise invalid_request(message, "stop", "array_above_max_length")
    return list(stop)


def _logit_bias(bias: Any) -> dict[int, float]:
    """OpenAI clients send token ids as JSON object keys (strings); llama wants ints.

    Ids past the model's vocabulary are checked by the engine (see `check_token_ids`)."""
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise invalid_request("'logit_bias' must be an object", "logit_bias")
    parsed: dict[int, float] = {}
    for key, value in bias.items():
        token = _token_id_key(key)
        if token is None:
            message = f"Invalid key in 'logit_bias': {key!r} is not a token id"
            raise invalid_request(message, "logit_bias")
        number = _number(value, "logit_bias")
        if abs(number) > LOGIT_BIAS_LIMIT:
            message = (
                f"Invalid 'logit_bias' value for token {token}: {value}. "
                f"Expected a value from -{_show(LOGIT_BIAS_LIMIT)} to {_show(LOGIT_BIAS_LIMIT)}."
            )
            raise invalid_request(message, "logit_bias")
        parsed[token] = number
    return parsed


def _token_id_key(key: Any) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key  # a Python caller's int key; JSON keys are always strings
    if isinstance(key, str) and _TOKEN_ID.fullmatch(key):
        return int(key)
    return None


def _response_format(fmt: Any) -> dict[str, Any] | None:
    """Map OpenAI's json_schema format to llama's json_object+schema, which builds a grammar."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise invalid_request("json_schema.schema must be an object", "response_format")
        return {"type": "json_object", "schema": schema}
    raise invalid_request(
        "response_format.type must be 'text', 'json_object' or 'json_schema'", "response_format"
    )


def _stream_flags(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = _optional(body.get("stream"), False, bool, "stream", "a boolean")
    options = _optional(body.get("stream_options"), {}, dict, "stream_options", "an object")
    include_usage = _optional(
        options.get("include_usage"), False, bool, "stream_options.include_usage", "a boolean"
    )
    return stream, stream and include_usage


def _optional(value: Any, default: Any, kind: type, param: str, what: str) -> Any:
    return default if value is None else _require(value, kind, param, what)


def _prompts(prompt: Any) -> list[Prompt]:
    """str | list[str] | list[int] | list[list[int]] -> one entry per prompt."""
    if prompt == "" or prompt == [""]:
        # llama-cpp-python 0.3.36 fails an assertion on an empty prompt.
        raise invalid_request("'prompt' must not be empty", "prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if _is_tokens(prompt):
            return [list(prompt)]
        if all(isinstance(p, str) and p for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) and p and _is_tokens(p) for p in prompt):
            return [list(p) for p in prompt]
    raise invalid_request(
        "'prompt' must be a string, an array of strings, or token arrays", "prompt"
    )


# OpenAI's limit on inputs per embeddings request (the total tokens: workers.engines.base).
MAX_EMBEDDING_INPUTS = 2048


def _embedding_inputs(value: Any) -> list[str] | list[list[int]]:
    if isinstance(value, list) and len(value) > MAX_EMBEDDING_INPUTS and not _is_tokens(value):
        message = f"'input' may hold at most {MAX_EMBEDDING_INPUTS} items, not {len(value)}"
        raise invalid_request(message, "input")
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if _is_tokens(value):
            return [list(value)]
        if all(isinstance(v, str) and v for v in value):
            return list(value)
        if all(isinstance(v, list) and v and _is_tokens(v) for v in value):
            return [list(v) for v in value]
    raise invalid_request(
        "'input' must be a non-empty string, array of strings, or token arrays", "input"
    )


def _is_tokens(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
