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


def tool(name: str, **function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **function}}


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def test_tools_default_to_auto() -> None:
    params = parse_chat({"messages": USER, "tools": [tool("f", parameters={"type": "object"})]})
    assert params.options["tool_choice"] == "auto"


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    params = parse_chat({"messages": USER, "tools": [tool("f")]})
    assert params.options["tools"][0]["function"]["parameters"] == {
        "type": "object",
        "properties": {},
    }


def test_tool_without_function_is_400() -> None:
    assert (
        rejected(parse_chat, {"messages": USER, "tools": [{"type": "function"}]}).param == "tools"
    )


def test_tool_name_with_quotes_is_400() -> None:
    assert rejected(parse_chat, {"messages": USER, "tools": [tool('a"b')]}).param == "tools"


def test_tool_choice_naming_an_unknown_function_is_400() -> None:
    body = {"messages": USER, "tools": [tool("f")], "tool_choice": named("g")}
    assert rejected(parse_chat, body).param == "tool_choice"


def test_named_tool_choice_passes_through() -> None:
    body = {"messages": USER, "tools": [tool("f"), tool("g")], "tool_choice": named("g")}
    assert parse_chat(body).options["tool_choice"] == named("g")


def test_required_with_one_tool_names_it() -> None:
    body = {"messages": USER, "tools": [tool("f")], "tool_choice": "required"}
    assert parse_chat(body).options["tool_choice"] == named("f")


def test_required_with_several_tools_is_400() -> None:
    body = {"messages": USER, "tools": [tool("f"), tool("g")], "tool_choice": "required"}
    assert "single tool" in rejected(parse_chat, body).message


def test_named_tool_choice_without_tools_is_400() -> None:
    assert rejected(parse_chat, {"messages": USER, "tool_choice": named("f")}).param


def test_legacy_functions_become_tools() -> None:
    body = {"messages": USER, "functions": [{"name": "f"}], "function_call": {"name": "f"}}
    params = parse_chat(body)
    assert (params.options["tool_choice"], params.legacy_functions) == (named("f"), True)


def test_tools_and_functions_together_are_400() -> None:
    body = {"messages": USER, "tools": [tool("f")], "functions": [{"name": "g"}]}
    assert rejected(parse_chat, body).param == "tools"


def test_history_with_tool_calls_and_results_is_accepted() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert parse_chat({"messages": messages}).messages[1]["tool_calls"] == [call]


def test_tool_result_without_call_id_is_400() -> None:
    messages = [*USER, {"role": "tool", "content": "42"}]
    assert rejected(parse_chat, {"messages": messages}).param == "messages[1].tool_call_id"


def test_history_tool_call_without_arguments_is_400() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f"}}
    messages = [*USER, {"role": "assistant", "tool_calls": [call]}]
    assert rejected(parse_chat, {"messages": messages}).param == "messages[1].tool_calls"


def test_chat_logprobs_with_top_n() -> None:
    params = parse_chat({"messages": USER, "logprobs": True, "top_logprobs": 3})
    assert (params.options["logprobs"], params.options["top_logprobs"]) == (True, 3)


def test_chat_logprobs_without_top_n_asks_llama_for_zero() -> None:
    params = parse_chat({"messages": USER, "logprobs": True})
    assert (params.options["top_logprobs"], params.top_logprobs) == (0, 0)


def test_chat_without_logprobs_has_no_top_n() -> None:
    params = parse_chat({"messages": USER, "logprobs": False})
    assert ("logprobs" in params.options, params.top_logprobs) == (False, None)


def test_top_logprobs_without_logprobs_is_400() -> None:
    assert rejected(parse_chat, {"messages": USER, "top_logprobs": 2}).param == "top_logprobs"


def test_top_logprobs_above_20_is_400() -> None:
    body = {"messages": USER, "logprobs": True, "top_logprobs": 21}
    assert rejected(parse_chat, body).param == "top_logprobs"


def test_chat_logprobs_must_be_boolean() -> None:
    assert rejected(parse_chat, {"messages": USER, "logprobs": 2}).param == "logprobs"


def test_completion_logprobs_pass_as_int() -> None:
    assert parse_completion({"prompt": "x", "logprobs": 2}).options["logprobs"] == 2


def test_completion_logprobs_above_5_is_400() -> None:
    assert rejected(parse_completion, {"prompt": "x", "logprobs": 6}).param == "logprobs"


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
