"""Pure units: making a conversation renderable by chatml-function-calling's template."""

from __future__ import annotations

from typing import Any

from workers.api.chatml_tools import prepare_messages

USER = {"role": "user", "content": "weather?"}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def test_tool_result_becomes_a_user_turn_naming_the_call() -> None:
    messages: list[dict[str, Any]] = [
        USER,
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    result = prepare_messages(messages, has_tools=False)[2]
    assert result == {"role": "user", "content": "Result of get_weather (c1):\nsunny"}


def test_developer_turn_becomes_system() -> None:
    messages = [{"role": "developer", "content": "be brief"}, USER]
    assert prepare_messages(messages, has_tools=False)[0]["role"] == "system"


def test_system_turn_added_when_tools_are_given() -> None:
    assert prepare_messages([USER], has_tools=True)[0]["role"] == "system"


def test_no_system_turn_added_without_tools() -> None:
    assert prepare_messages([USER], has_tools=False) == [USER]
