"""The tokens used, read from OpenAI's `usage` where a server is not our worker; llama-server's
errors in OpenAI's words, its chat answers with the fields OpenAI's schema requires."""

from __future__ import annotations

import json

from gateway.http.foreign_answers import completed_chat, in_openai_words
from gateway.http.usage import ask_for_usage, take_usage_chunk, usage_in_body
from tests.support import sse_data
from workers.wire import Usage

USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
DELTA = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
LAST = b'data: {"id":"c1","choices":[],"usage":' + json.dumps(USAGE).encode() + b"}\n\n"
DONE = b"data: [DONE]\n\n"


def test_a_body_s_usage_chat_embeddings_and_responses_alike() -> None:
    assert usage_in_body(json.dumps({"choices": [], "usage": USAGE}).encode()) == Usage(5, 7)
    assert usage_in_body(b'{"data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}') == Usage(9, 0)
    responses = b'{"output":[],"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}'
    assert usage_in_body(responses) == Usage(3, 4)
    assert usage_in_body(b'{"error":{"message":"x"}}') is None
    assert usage_in_body(b"not json") is None


def test_a_stream_asks_for_its_usage_unless_its_client_did() -> None:
    asked = ask_for_usage(b'{"model":"m","stream":true,"stream_options":{"x":1}}')
    assert asked is not None
    assert json.loads(asked)["stream_options"] == {"x": 1, "include_usage": True}
    assert ask_for_usage(b'{"stream":true,"stream_options":{"include_usage":true}}') is None


def test_the_usage_chunk_is_read_and_taken_out_only_when_the_gateway_asked() -> None:
    assert take_usage_chunk(DELTA + LAST + DONE, strip=True) == (DELTA + DONE, Usage(5, 7))
    assert take_usage_chunk(LAST + DONE, strip=True) == (DONE, Usage(5, 7))
    assert take_usage_chunk(DELTA + LAST, strip=False) == (DELTA + LAST, Usage(5, 7))
    # "choices":[] in a chunk with no usage (a server's odd first chunk): relayed as it is.
    odd = b'data: {"choices":[]}\n\n'
    assert take_usage_chunk(odd, strip=True) == (odd, None)


# llama-server's completions stream puts its usage on the last chunk with a choice.
COMPLETION_LAST = (
    b'data: {"choices":[{"text":"","index":0,"finish_reason":"length"}],'
    b'"object":"text_completion","usage":' + json.dumps(USAGE).encode() + b',"id":"c2"}\n\n'
)


def test_a_usage_on_a_chunk_with_a_choice_is_read_and_only_the_usage_taken_out() -> None:
    events, usage = take_usage_chunk(DELTA + COMPLETION_LAST + DONE, strip=True)
    assert usage == Usage(5, 7) and events.startswith(DELTA) and events.endswith(DONE)
    (kept,) = [json.loads(d) for d in sse_data(events.decode()) if d.startswith("{")][1:]
    assert kept == {
        "choices": [{"text": "", "index": 0, "finish_reason": "length"}],
        "object": "text_completion",
        "id": "c2",
    }
    assert take_usage_chunk(COMPLETION_LAST, strip=False) == (COMPLETION_LAST, Usage(5, 7))


def test_a_responses_stream_s_usage_is_read_from_its_completed_event() -> None:
    completed = {
        "type": "response.completed",
        "response": {"id": "r", "output": [], "usage": {"input_tokens": 3, "output_tokens": 4}},
    }
    event = b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"
    assert take_usage_chunk(event, strip=False) == (event, Usage(3, 4))


def test_data_written_by_the_model_is_not_taken_for_the_event_s_data_line() -> None:
    tricky = (
        b'data: {"choices":[{"text":"data: x","finish_reason":"stop"}],"usage":'
        + json.dumps(USAGE).encode()
        + b"}\n\n"
    )
    events, usage = take_usage_chunk(tricky, strip=True)
    assert usage == Usage(5, 7) and b"usage" not in events and b'"data: x"' in events


def test_llama_server_s_error_words_become_openai_s() -> None:
    over = (
        b'{"error":{"code":400,"message":"request (1201 tokens) exceeds the available context '
        b'size (1024 tokens)","type":"exceed_context_size_error","n_prompt_tokens":1201}}'
    )
    error = json.loads(in_openai_words(over) or b"")["error"]
    assert error == {
        "message": "request (1201 tokens) exceeds the available context size (1024 tokens)",
        "type": "invalid_request_error",
        "param": None,
        "code": "context_length_exceeded",
    }
    loading = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
    assert json.loads(in_openai_words(loading) or b"")["error"]["type"] == "server_error"
    odd = b'{"error":{"code":418,"message":"?","type":"teapot_error"}}'
    assert json.loads(in_openai_words(odd) or b"")["error"]["type"] == "invalid_request_error"
    openai_s = b'{"error":{"message":"x","type":"invalid_request_error","param":null,"code":null}}'
    assert in_openai_words(openai_s) is None and in_openai_words(b"[]") is None  # as they are


def test_a_llama_server_chat_answer_gets_the_null_fields_it_leaves_out() -> None:
    answer = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"},
            },
            {
                "index": 1,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "yo"},
                "logprobs": {"content": []},
            },
        ],
    }
    body = json.dumps(answer, separators=(",", ":")).encode()
    first, second = json.loads(completed_chat(body) or b"")["choices"]
    assert first["logprobs"] is None and first["message"]["refusal"] is None
    assert second["logprobs"] == {"content": [], "refusal": None}
    full = {**answer["choices"][0], "logprobs": None, "message": {"content": "hi", "refusal": None}}
    whole = json.dumps({**answer, "choices": [full]}, separators=(",", ":")).encode()
    assert completed_chat(whole) is None  # OpenAI's: as it is
    assert completed_chat(b'{"object":"text_completion","choices":[]}') is None
