"""Pure units: a Responses request as chat parameters; chat answers and streams as a Response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import assert_valid
from tests.workers.llama_shapes import CALL, raw_chat_chunk, raw_tool_chat, raw_tool_delta
from workers.api.responses import ResponseStream, answer_output, chat_answer, response_body
from workers.api.responses_request import ResponseMeta, parse_response_request
from workers.errors import ApiError
from workers.wire import Usage

CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": CITY,
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}


def parsed(**body: Any) -> tuple[Any, ResponseMeta]:
    return parse_response_request({"input": "hi", **body}, "m")


def test_function_call_items_become_the_assistant_s_tool_calls_and_tool_messages() -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking."}],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "id": "fc_1",
            "status": "completed",
        },
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "noon"}],
        },
    ]
    params, _ = parse_response_request({"input": history, "tools": [WEATHER, TIME]}, "m")
    call = {
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert params.messages[1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", **call},
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    ]


def test_a_call_with_no_text_before_it_is_an_assistant_turn_of_its_own() -> None:
    item = {"type": "function_call", "call_id": "c", "name": "get_time", "arguments": "{}"}
    params, _ = parse_response_request({"input": [{"role": "user", "content": "t?"}, item]}, "m")
    assert params.messages[-1]["content"] == ""  # as the chat parser passes a call-only turn
    assert params.messages[-1]["tool_calls"][0]["id"] == "c"


def test_function_tools_and_tool_choice_are_nested_the_chat_way_and_echoed() -> None:
    params, meta = parsed(
        tools=[WEATHER, TIME], tool_choice={"type": "function", "name": "get_time"}
    )
    names = [tool["function"]["name"] for tool in params.options["tools"]]
    assert names == ["get_weather", "get_time"]
    assert params.options["tools"][0]["function"]["description"] == "Weather in a city"
    assert params.options["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    body = response_body(meta, None, None, None)
    assert_valid("Response", body)
    assert body["tools"][0] == {**WEATHER, "strict": None}
    assert body["tool_choice"] == {"type": "function", "name": "get_time"}


def test_required_over_several_tools_is_left_for_the_engine() -> None:
    params, _ = parsed(tools=[WEATHER, TIME], tool_choice="required")
    assert params.options["tool_choice"] == "required"


def test_allowed_tools_keeps_the_listed_functions_and_chooses_as_its_mode_says() -> None:
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "get_time"}],
    }
    params, meta = parsed(tools=[WEATHER, TIME], tool_choice=choice)
    assert [tool["function"]["name"] for tool in params.options["tools"]] == ["get_time"]
    assert params.options["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert_valid("Response", response_body(meta, None, None, None))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "mcp", "server_label": "x"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools"),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content"),
    ],
)
def test_what_cannot_be_served_is_a_400_naming_the_parameter(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(ApiError) as caught:
        parsed(**body)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_a_whole_tool_call_answer_is_function_call_items_only() -> None:
    _, meta = parsed(tools=[WEATHER], tool_choice="required")
    answer = chat_answer(raw_tool_chat())
    body = response_body(meta, answer_output(meta, answer), Usage(5, 7), answer.finish)
    assert_valid("Response", body)
    (item,) = body["output"]
    assert (item["type"], item["call_id"], item["name"], item["arguments"], item["status"]) == (
        "function_call",
        CALL["id"],
        "get_weather",
        '{"city": "Paris"}',
        "completed",
    )
    assert item["id"].startswith("fc_") and body["status"] == "completed"


def events_of(meta: ResponseMeta, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stream = ResponseStream(meta)
    events = stream.opening() + [e for raw in raws for e in stream.chunk(raw)]
    events = json.loads(json.dumps(events + stream.closing(Usage(5, 7))))
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def test_a_streamed_tool_call_opens_an_item_sends_argument_pieces_and_closes_it() -> None:
    _, meta = parsed(tools=[WEATHER])
    events = events_of(
        meta,
        [
            raw_chat_chunk({"role": "assistant", "content": None, "tool_calls": None}, None),
            raw_chat_chunk(raw_tool_delta('{"city"'), None),
            raw_chat_chunk(raw_tool_delta(': "Paris"}'), None),
            raw_chat_chunk({"role": None, "content": None, "tool_calls": None}, "tool_calls"),
        ],
    )
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, done = events[2]["item"], events[6]["item"]
    assert (added["arguments"], added["status"], added["call_id"]) == (
        "",
        "in_progress",
        CALL["id"],
    )
    assert (events[5]["name"], events[5]["arguments"]) == ("get_weather", '{"city": "Paris"}')
    assert done == {**added, "arguments": '{"city": "Paris"}', "status": "completed"}
    assert events[-1]["response"]["output"] == [done]


def test_text_then_a_call_are_two_output_items_in_order() -> None:
    _, meta = parsed(tools=[WEATHER])
    events = events_of(
        meta,
        [
            raw_chat_chunk({"content": "Let me look."}, None),
            raw_chat_chunk(raw_tool_delta("{}"), "tool_calls"),
        ],
    )
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call"]
    assert output[0]["content"][0]["text"] == "Let me look."
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [0, 1]


def test_an_empty_stream_still_answers_with_an_empty_message() -> None:
    _, meta = parsed()
    events = events_of(meta, [raw_chat_chunk({}, "stop")])
    (message,) = events[-1]["response"]["output"]
    assert (message["type"], message["content"][0]["text"]) == ("message", "")
