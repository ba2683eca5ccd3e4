"""Pure units: OpenAI request bodies -> engine parameters, bad input -> 400."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import ApiError
from workers.params import parse_chat, parse_completion, parse_embedding

USER = [{"role": "user", "content": "hi"}]


def rejected(parse: Any, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


def test_chat_requires_messages() -> None:
    assert rejected(parse_chat, {}).param == "messages"


def test_chat_rejects_n_above_one() -> None:
    assert rejected(parse_chat, {"messages": USER, "n": 2}).param == "n"


def test_chat_accepts_n_one_and_ignores_unknown_fields() -> None:
    params = parse_chat({"messages": USER, "n": 1, "user": "u", "store": True, "whatever": {}})
    assert params.messages == USER


def test_chat_rejects_bad_role() -> None:
    assert rejected(parse_chat, {"messages": [{"role": "robot", "content": "x"}]}).param


def test_chat_rejects_string_temperature() -> None:
    assert rejected(parse_chat, {"messages": USER, "temperature": "hot"}).param == "temperature"


def test_chat_flattens_text_parts() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    params = parse_chat({"messages": [{"role": "user", "content": parts}]})
    assert params.messages[0]["content"] == "ab"


def test_max_completion_tokens_is_max_tokens() -> None:
    params = parse_chat({"messages": USER, "max_completion_tokens": 7})
    assert params.options["max_tokens"] == 7


def test_logit_bias_keys_become_ints() -> None:
    params = parse_chat({"messages": USER, "logit_bias": {"2": -100}})
    assert params.options["logit_bias"] == {2: -100.0}


def test_json_schema_format_maps_to_llama_json_object() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    params = parse_chat({"messages": USER, "response_format": fmt})
    assert params.options["response_format"] == {"type": "json_object", "schema": schema}


def test_include_usage_needs_stream() -> None:
    params = parse_chat({"messages": USER, "stream_options": {"include_usage": True}})
    assert params.include_usage is False


def test_include_usage_with_stream() -> None:
    body = {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    assert parse_chat(body).include_usage is True


def test_tools_are_rejected_not_ignored() -> None:
    assert rejected(parse_chat, {"messages": USER, "tools": [{"type": "function"}]}).param


def test_completion_prompt_list_of_strings() -> None:
    assert parse_completion({"prompt": ["a", "b"]}).prompts == ["a", "b"]


def test_completion_prompt_tokens() -> None:
    assert parse_completion({"prompt": [1, 2, 3]}).prompts == [[1, 2, 3]]


def test_completion_default_max_tokens_is_16() -> None:
    assert parse_completion({"prompt": "x"}).options["max_tokens"] == 16


def test_completion_requires_prompt() -> None:
    assert rejected(parse_completion, {}).param == "prompt"


def test_completion_rejects_mixed_prompt_list() -> None:
    assert rejected(parse_completion, {"prompt": ["a", 1]}).param == "prompt"


def test_completion_rejects_zero_max_tokens() -> None:
    assert rejected(parse_completion, {"prompt": "x", "max_tokens": 0}).param == "max_tokens"


def test_embedding_inputs_token_arrays() -> None:
    assert parse_embedding({"input": [[1, 2], [3]]}).inputs == [[1, 2], [3]]


def test_embedding_rejects_empty_string() -> None:
    assert rejected(parse_embedding, {"input": ""}).param == "input"


def test_embedding_rejects_unknown_encoding() -> None:
    body = {"input": "x", "encoding_format": "hex"}
    assert rejected(parse_embedding, body).param == "encoding_format"


def test_user_message_without_content_is_400() -> None:
    assert rejected(parse_chat, {"messages": [{"role": "user"}]}).param == "messages[0].content"


def test_assistant_message_without_content_becomes_empty() -> None:
    messages = [*USER, {"role": "assistant", "content": None}, *USER]
    assert parse_chat({"messages": messages}).messages[1]["content"] == ""


def test_completion_rejects_empty_prompt() -> None:
    assert rejected(parse_completion, {"prompt": ""}).param == "prompt"
