"""Pure units: OpenAI request bodies -> engine parameters, bad input -> 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.api.params import parse_chat, parse_completion, parse_embedding
from workers.errors import ApiError

USER = [{"role": "user", "content": "hi"}]


def rejected(parse: Any, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


def test_chat_requires_messages() -> None:
    assert rejected(parse_chat, {}).param == "messages"


def test_n_choices_up_to_eight_in_all() -> None:
    assert parse_chat({"messages": USER, "n": 8}).n == 8 and parse_chat({"messages": USER}).n == 1
    for value in (0, 9):
        assert rejected(parse_chat, {"messages": USER, "n": value}).param == "n"
    assert parse_completion({"prompt": ["a", "b"], "n": 4}).n == 4
    error = rejected(parse_completion, {"prompt": ["a", "b", "c"], "n": 3})
    assert error.param == "n" and "9 choices; at most 8" in error.message


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


def test_required_with_several_tools_is_left_to_the_engine() -> None:
    body = {"messages": USER, "tools": [tool("f"), tool("g")], "tool_choice": "required"}
    assert parse_chat(body).options["tool_choice"] == "required"  # workers.api.required_call
    assert rejected(parse_chat, {"messages": USER, "tool_choice": "required"}).param == (
        "tool_choice"
    )


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


# Sampling ranges: exactly what api.openai.com rejects, with its wording and codes.


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        ("temperature", 2.01, "decimal_above_max_value"),
        ("temperature", -0.1, "decimal_below_min_value"),
        ("top_p", 1.5, "decimal_above_max_value"),
        ("top_p", -1, "decimal_below_min_value"),
        ("presence_penalty", 2.5, "decimal_above_max_value"),
        ("presence_penalty", -3, "decimal_below_min_value"),
        ("frequency_penalty", 9, "decimal_above_max_value"),
        ("frequency_penalty", -2.01, "decimal_below_min_value"),
        ("min_p", 1.01, "decimal_above_max_value"),
        ("min_p", -0.5, "decimal_below_min_value"),
        ("top_k", -1, "integer_below_min_value"),
        ("top_k", 2**31, "integer_above_max_value"),
        ("seed", 2**63, "integer_above_max_value"),
        ("seed", -(2**63) - 1, "integer_below_min_value"),
    ],
)
def test_out_of_range_sampling_is_400(key: str, value: float, code: str) -> None:
    error = rejected(parse_chat, {"messages": USER, key: value})
    assert (error.param, error.code) == (key, code)
    assert error.message.startswith(f"Invalid '{key}': ")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("temperature", 0),
        ("temperature", 2),
        ("top_p", 0),
        ("top_p", 1),
        ("presence_penalty", -2),
        ("frequency_penalty", 2),
        ("min_p", 0),
        ("min_p", 1),
        ("top_k", 0),
        ("seed", -1),
        ("seed", 2**63 - 1),
        ("repeat_penalty", 0.01),
    ],
)
def test_range_limits_are_accepted(key: str, value: float) -> None:
    assert parse_chat({"messages": USER, key: value}).options[key] == value


def test_temperature_message_is_openais() -> None:
    assert rejected(parse_chat, {"messages": USER, "temperature": 3}).message == (
        "Invalid 'temperature': decimal above maximum value. "
        "Expected a value <= 2, but got 3 instead."
    )


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10**400])
@pytest.mark.parametrize("key", ["temperature", "top_p", "repeat_penalty", "min_p"])
def test_non_finite_numbers_are_400(key: str, value: float) -> None:
    # json.loads turns 1e400 into inf; a 400-digit integer overflows float().
    assert rejected(parse_chat, {"messages": USER, key: value}).param == key


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_repeat_penalty_must_be_positive(value: float) -> None:
    assert rejected(parse_chat, {"messages": USER, "repeat_penalty": value}).param == (
        "repeat_penalty"
    )


@pytest.mark.parametrize("value", [1.5, "7", True, None.__class__])
def test_seed_must_be_an_integer(value: Any) -> None:
    assert rejected(parse_chat, {"messages": USER, "seed": value}).param == "seed"


@pytest.mark.parametrize("value", [100.5, -101, float("inf"), 10**400, "1"])
def test_logit_bias_values_out_of_range_are_400(value: Any) -> None:
    body = {"messages": USER, "logit_bias": {"2": value}}
    assert rejected(parse_chat, body).param == "logit_bias"


@pytest.mark.parametrize("key", ["-1", "x", "1.5", "²", " 3", "99999999999"])
def test_logit_bias_keys_must_be_token_ids(key: str) -> None:
    body = {"messages": USER, "logit_bias": {key: 1}}
    assert rejected(parse_chat, body).param == "logit_bias"


def test_logit_bias_limits_are_accepted() -> None:
    body = {"messages": USER, "logit_bias": {"1": -100, "2": 100}}
    assert parse_chat(body).options["logit_bias"] == {1: -100.0, 2: 100.0}


def test_more_than_four_stop_sequences_is_400() -> None:
    body = {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}
    error = rejected(parse_completion, body)
    assert (error.param, error.code) == ("stop", "array_above_max_length")


def test_four_stop_sequences_are_accepted() -> None:
    assert parse_chat({"messages": USER, "stop": list("abcd")}).options["stop"] == list("abcd")


def test_top_logprobs_below_zero_is_400() -> None:
    body = {"messages": USER, "logprobs": True, "top_logprobs": -1}
    assert rejected(parse_chat, body).param == "top_logprobs"


@pytest.mark.parametrize("value", [1.0, True, "1"])
def test_n_must_be_an_integer(value: Any) -> None:
    assert rejected(parse_chat, {"messages": USER, "n": value}).param == "n"


@pytest.mark.parametrize(("key", "value"), [("stream", 0), ("stream", ""), ("stream_options", [])])
def test_stream_flags_must_have_their_types(key: str, value: Any) -> None:
    assert rejected(parse_chat, {"messages": USER, key: value}).param == key


@pytest.mark.parametrize("role", [[], {}, ["user"], 1])
def test_unhashable_or_odd_role_is_400(role: Any) -> None:
    assert rejected(parse_chat, {"messages": [{"role": role, "content": "x"}]}).param == (
        "messages[0].role"
    )


# Fuzz: any JSON value in any known field gives a parsed result or a 400, nothing else.

# Numbers at and past every limit the parser knows, as json.loads can produce them.
EDGE_NUMBERS = st.sampled_from(
    [
        0,
        1,
        -1,
        2,
        4,
        5,
        20,
        21,
        100,
        101,
        2**31,
        2**63,
        -(2**63) - 1,
        10**400,
        -(10**400),
        0.5,
        -0.01,
        2.01,
        100.5,
        1e308,
        float("inf"),
        float("-inf"),
        float("nan"),
    ]
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | EDGE_NUMBERS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(
        [
            "",
            "user",
            "assistant",
            "tool",
            "function",
            "text",
            "auto",
            "none",
            "required",
            "json_object",
            "json_schema",
            "float",
            "base64",
            "f",
        ]
    )
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def some(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `fields`, each either its shaped value or any JSON."""
    return st.fixed_dictionaries({}, optional={k: v | JSON for k, v in fields.items()})


FUNCTION = some(
    {
        "name": st.sampled_from(["f", "g", 'a"b']),
        "parameters": JSON,
        "arguments": st.text(max_size=4),
    }
)
TOOL = some({"type": st.just("function"), "function": FUNCTION})
TOOL_CALL = some({"id": st.text(max_size=3), "type": st.just("function"), "function": FUNCTION})
PART = some({"type": st.sampled_from(["text", "image_url"]), "text": JSON})
MESSAGE = some(
    {
        "role": st.sampled_from(
            sorted(["system", "developer", "user", "assistant", "tool", "function", "robot"])
        ),
        "content": st.text(max_size=6) | st.lists(PART, max_size=3),
        "tool_calls": st.lists(TOOL_CALL, max_size=2),
        "tool_call_id": st.text(max_size=3),
        "name": JSON,
    }
)
SAMPLING = {
    "n": JSON,
    "max_tokens": JSON,
    "max_completion_tokens": JSON,
    "temperature": JSON,
    "top_p": JSON,
    "presence_penalty": JSON,
    "frequency_penalty": JSON,
    "min_p": JSON,
    "repeat_penalty": JSON,
    "seed": JSON,
    "top_k": JSON,
    "stop": st.lists(st.text(max_size=3), max_size=6),
    "logit_bias": st.dictionaries(st.text(max_size=4), JSON, max_size=3),
    "stream": st.booleans(),
    "stream_options": some({"include_usage": st.booleans()}),
    "logprobs": JSON,
    "user": JSON,
}
CHAT_BODY = some(
    {
        **SAMPLING,
        "messages": st.lists(MESSAGE, max_size=3),
        "top_logprobs": JSON,
        "response_format": some({"type": JSON, "json_schema": some({"schema": JSON})}),
        "tools": st.lists(TOOL, max_size=3),
        "tool_choice": JSON | some({"type": JSON, "function": FUNCTION}),
        "functions": st.lists(FUNCTION, max_size=2),
        "function_call": JSON | FUNCTION,
    }
)
TOKENS = st.lists(st.integers(min_value=-2, max_value=2**40), max_size=4)
COMPLETION_BODY = some(
    {
        **SAMPLING,
        "prompt": st.text(max_size=6) | st.lists(st.text(max_size=4) | TOKENS, max_size=3) | TOKENS,
        "echo": JSON,
        "suffix": JSON,
        "best_of": JSON,
    }
)
EMBEDDING_BODY = some(
    {
        "input": st.text(max_size=6) | st.lists(st.text(max_size=4) | TOKENS, max_size=3) | TOKENS,
        "encoding_format": JSON,
        "dimensions": JSON,
        "model": JSON,
    }
)


def mutated(base: dict[str, Any], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid object with one to three of `keys` set to any JSON: each field gets reached."""
    value = EDGE_NUMBERS | JSON
    changes = st.dictionaries(st.sampled_from(keys), value, min_size=1, max_size=3)
    return changes.map(lambda change: {**base, **change})


SAMPLING_KEYS = sorted(SAMPLING)
CHAT_KEYS = [
    *SAMPLING_KEYS,
    "messages",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
]
CHAT_BASE = {"messages": USER, "logprobs": True, "tools": [tool("f")]}
ONE_BAD_MESSAGE = mutated(
    {"role": "user", "content": "hi"}, ["role", "content", "tool_calls", "tool_call_id", "name"]
).map(lambda message: {"messages": [*USER, message]})
CHAT_BODIES = (
    CHAT_BODY
    | mutated(CHAT_BASE, CHAT_KEYS)
    | ONE_BAD_MESSAGE
    | st.dictionaries(st.text(max_size=8), JSON, max_size=6)
)
COMPLETION_BODIES = COMPLETION_BODY | mutated(
    {"prompt": "x"}, [*SAMPLING_KEYS, "prompt", "echo", "suffix"]
)
EMBEDDING_BODIES = EMBEDDING_BODY | mutated({"input": "x"}, ["input", "encoding_format"])


def parses_or_400(parse: Any, body: Any) -> None:
    try:
        parse(body)
    except ApiError as exc:
        assert (exc.status, exc.type) == (400, "invalid_request_error")
        assert exc.param is None or isinstance(exc.param, str)
        json.dumps(exc.body())  # the error body itself must serialise


@settings(max_examples=300, deadline=None, derandomize=True)
@given(body=CHAT_BODIES)
def test_fuzz_chat_bodies_parse_or_400(body: dict[str, Any]) -> None:
    parses_or_400(parse_chat, body)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(body=COMPLETION_BODIES)
def test_fuzz_completion_bodies_parse_or_400(body: dict[str, Any]) -> None:
    parses_or_400(parse_completion, body)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(body=EMBEDDING_BODIES)
def test_fuzz_embedding_bodies_parse_or_400(body: dict[str, Any]) -> None:
    parses_or_400(parse_embedding, body)
