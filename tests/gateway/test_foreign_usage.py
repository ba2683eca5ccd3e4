"""The tokens used, read from OpenAI's `usage` where a server is not our worker."""

from __future__ import annotations

import json

from gateway.pool.usage import ask_for_usage, take_usage_chunk, usage_in_body
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
