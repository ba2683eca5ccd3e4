"""End to end with LangChain's ChatOpenAI, as its users configure it, on the shared llama gateway:
Chat Completions and the Responses API, plain answers and a forced call to one of two tools."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from tests.support import GatewayProcess


def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def get_time(zone: str) -> str:
    """The time in a time zone."""
    return "noon"


@pytest.fixture(params=[False, True], ids=["chat-completions", "responses-api"])
def chat(request: pytest.FixtureRequest, gateway: GatewayProcess) -> ChatOpenAI:
    return ChatOpenAI(
        model="smollm2",
        base_url=gateway.url + "/v1",
        api_key="unused",  # type: ignore[arg-type,call-arg]
        max_retries=0,
        max_tokens=48,
        use_responses_api=request.param,
    )


def test_chat_openai_answers(chat: ChatOpenAI) -> None:
    reply = chat.invoke("Say hello in three words.")
    assert isinstance(reply, AIMessage) and reply.text
    served_by = "resp_" if chat.use_responses_api else "chatcmpl"  # the endpoint it really used
    assert reply.response_metadata["id"].startswith(served_by)
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0


def test_chat_openai_streams(chat: ChatOpenAI) -> None:
    pieces = list(chat.stream("Say hello in three words."))
    assert len(pieces) > 1
    whole = pieces[0]
    for piece in pieces[1:]:
        whole += piece
    assert whole.text


def test_bind_tools_any_over_two_tools_calls_one_and_reads_the_result(chat: ChatOpenAI) -> None:
    question = HumanMessage("What is the weather in Paris?")
    reply = chat.bind_tools([get_weather, get_time], tool_choice="any").invoke([question])
    assert isinstance(reply, AIMessage)
    (call,) = reply.tool_calls
    assert call["name"] in ("get_weather", "get_time") and call["args"]
    assert isinstance(call["id"], str)
    result = ToolMessage(json.dumps("Sunny, 21 C"), tool_call_id=call["id"])
    answer = chat.bind_tools([get_weather, get_time]).invoke([question, reply, result])
    assert answer.text and not answer.tool_calls
