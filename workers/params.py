"""Parse OpenAI request bodies into what an engine needs, rejecting bad input with a 400.

Unknown fields are ignored (clients send many we have no use for); known fields with the
wrong type are rejected, so nothing malformed reaches llama.cpp and turns into a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.errors import invalid_request
from workers.logprobs import parse_chat_logprobs, parse_completion_logprobs
from workers.tools import check_message_tools, parse_tools

__all__ = [
    "ChatParams",
    "CompletionParams",
    "EmbeddingParams",
    "Prompt",
    "parse_chat",
    "parse_completion",
    "parse_embedding",
]

# A completion prompt as llama-cpp-python takes it: text or token ids.
Prompt = str | list[int]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True)
class ChatParams:
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    # Keyword arguments for Llama.create_chat_completion (already in llama's vocabulary).
    options: dict[str, Any] = field(default_factory=dict)
    top_logprobs: int | None = None  # None: no logprobs requested
    legacy_functions: bool = False  # answer tool calls as `function_call` (see workers.tools)


@dataclass(frozen=True)
class CompletionParams:
    prompts: list[Prompt]
    stream: bool = False
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbeddingParams:
    inputs: list[str] | list[list[int]]
    encoding_format: str = "float"


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
    return CompletionParams(prompts, stream, include_usage, options)


def parse_embedding(body: Mapping[str, Any]) -> EmbeddingParams:
    if "input" not in body:
        raise invalid_request("'input' is required", "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return EmbeddingParams(_embedding_inputs(body["input"]), fmt)


def _message(message: Any, index: int) -> dict[str, Any]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_request(f"{param} must be an object", param)
    role = message.get("role")
    if role not in _ROLES:
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
    n = body.get("n")
    if n is not None and n != 1:
        raise invalid_request("only n=1 is supported: this worker returns one choice", "n")
    options: dict[str, Any] = {}
    max_tokens = _max_tokens(body, default_max_tokens)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p"):
        _copy_number(body, key, options)
    _copy_number(body, "repeat_penalty", options)
    for key in ("seed", "top_k"):
        if body.get(key) is not None:
            options[key] = _integer(body[key], key)
    stop = _stop(body.get("stop"))
    if stop:
        options["stop"] = stop
    logit_bias = _logit_bias(body.get("logit_bias"))
    if logit_bias:
        options["logit_bias"] = logit_bias
    return options


def _max_tokens(body: Mapping[str, Any], default: int | None) -> int | None:
    # max_completion_tokens is the newer name for the same limit; it wins when both are set.
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            tokens = _integer(value, key)
            if tokens < 1:
                raise invalid_request(f"'{key}' must be at least 1", key)
            return tokens
    return default


def _copy_number(body: Mapping[str, Any], key: str, options: dict[str, Any]) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_request(f"'{key}' must be a number", key)
    options[key] = float(value)


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
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise invalid_request("'stop' must be a string or an array of strings", "stop")


def _logit_bias(bias: Any) -> dict[int, float]:
    """OpenAI clients send token ids as JSON object keys (strings); llama wants ints."""
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise invalid_request("'logit_bias' must be an object", "logit_bias")
    try:
        return {int(k): float(v) for k, v in bias.items()}
    except (TypeError, ValueError):
        raise invalid_request("'logit_bias' maps token ids to numbers", "logit_bias") from None


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
    stream = body.get("stream") or False
    _require(stream, bool, "stream", "a boolean")
    options = body.get("stream_options") or {}
    _require(options, dict, "stream_options", "an object")
    include_usage = options.get("include_usage") or False
    _require(include_usage, bool, "stream_options.include_usage", "a boolean")
    return stream, stream and include_usage


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


def _embedding_inputs(value: Any) -> list[str] | list[list[int]]:
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
