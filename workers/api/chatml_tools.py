"""llama-cpp-python 0.3.36's `chatml-function-calling` format: its quirks and our work-arounds.

Its template renders only system, user and assistant turns: a `tool` (or legacy `function`)
result or a `developer` turn becomes a bare `<|im_start|>tool` line with no content and no
end marker, and it lists the tools only inside a system message. `prepare_messages` makes
the conversation renderable: developer turns become system turns, tool results become user
turns that say which call they answer, and a system turn is added when tools are given
without one (otherwise the model never sees the tools' schemas).

Its `tool_choice: "auto"` path has two bugs, handled in `workers.engines.llama`:
- when the model chooses to answer with a message, the follow-up grammar only allows the
  literal text `<|im_end|>` (or a function name), so the answer is always empty;
- when streaming and the model chooses a call, it raises "Automatic streaming tool choice is
  not supported" after the decision.
So "auto" always decides without streaming; a call is returned (or replayed as stream chunks),
and a message is generated again with `tool_choice: "none"` (streamed when asked).
Named functions (and "required" with one tool) work as llama implements them, streaming too.
Known limits left: in "auto" mode llama ignores `max_tokens` for the call arguments (the
grammar bounds them), and logprobs are not computed for tool calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CHATML_FUNCTION_CALLING", "decides_tools", "has_tool_calls", "prepare_messages"]

CHATML_FUNCTION_CALLING = "chatml-function-calling"


def _result_turn(message: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    call = message.get("tool_call_id") or ""
    name = message.get("name") or names.get(call) or "function"
    return {"role": "user", "content": f"Result of {name} ({call}):\n{message['content']}"}


def prepare_messages(messages: list[dict[str, Any]], has_tools: bool) -> list[dict[str, Any]]:
    names = {
        call["id"]: call["function"]["name"] for m in messages for call in m.get("tool_calls") or []
    }
    prepared: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role in ("tool", "function"):
            prepared.append(_result_turn(message, names))
        elif role == "developer":
            prepared.append({**message, "role": "system"})
        else:
            prepared.append(message)
    if has_tools and not any(m["role"] == "system" for m in prepared):
        prepared.insert(0, {"role": "system", "content": "You are a helpful assistant."})
    return prepared


def decides_tools(options: Mapping[str, Any]) -> bool:
    """True for the "auto" requests that need the work-around above."""
    return bool(options.get("tools")) and options.get("tool_choice") == "auto"


def has_tool_calls(raw: Mapping[str, Any]) -> bool:
    choices = raw.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return bool(message.get("tool_calls"))
