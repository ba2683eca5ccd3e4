"""The real worker process on the stand-in engine, driven over HTTP."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import REPO, assert_valid, free_port, pid_alive, sse_data
from tests.workers.support import WorkerProcess, assert_valid_completion_chunk

USER = [{"role": "user", "content": "hello there"}]
STATUS_KEYS = {
    "state",
    "model",
    "engine",
    "path",
    "pid",
    "device",
    "n_gpu_layers",
    "n_ctx",
    "embedding",
    "capacity",
    "slots_busy",
    "batching",
    "requests_served",
    "load_seconds",
    "loaded_at",
    "started_at",
    "error",
    "recent",
}


def standin(name: str, *flags: str, **options: Any) -> WorkerProcess:
    return WorkerProcess(name, "--engine", "standin", "--standin-json", json.dumps(options), *flags)


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    # Token ids welcome: the vocabulary checks below send some to /v1/embeddings.
    with standin("fast", "--accept-token-ids", token_delay=0.005, tokens=8, n_ctx=64) as w:
        w.wait_ready()
        yield w


@pytest.fixture(scope="module")
def slow() -> Iterator[WorkerProcess]:
    with standin("slow", token_delay=0.05, tokens=2000, n_ctx=4096) as w:
        w.wait_ready()
        yield w


def stream(w: WorkerProcess, path: str, body: dict[str, Any]) -> list[str]:
    with w.client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_data(response.read().decode())


def last_record(w: WorkerProcess, request_id: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [r for r in w.status()["recent"] if r["id"] == request_id]
        if records and records[-1]["finished"] is not None:
            last: dict[str, Any] = records[-1]
            return last
        time.sleep(0.02)
    raise AssertionError(f"request {request_id} never finished")


# Status


def test_status_has_every_field(worker: WorkerProcess) -> None:
    assert set(worker.status()) == STATUS_KEYS


def test_status_describes_the_standin(worker: WorkerProcess) -> None:
    body = worker.status()
    assert (body["state"], body["model"], body["engine"]) == ("ready", "fast", "standin")
    assert (body["pid"], body["n_ctx"], body["path"]) == (worker.proc.pid, 64, None)


def test_recent_records_request_id_and_outcome(worker: WorkerProcess) -> None:
    body = {"messages": USER, "max_tokens": 2}
    worker.client.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "req-42"})
    record = last_record(worker, "req-42")
    assert record["endpoint"] == "/v1/chat/completions"
    assert record["outcome"] == "ok"
    assert record["started"] <= record["finished"]


def test_response_echoes_request_id(worker: WorkerProcess) -> None:
    body = {"messages": USER, "max_tokens": 1}
    response = worker.client.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "e1"})
    assert response.headers["x-request-id"] == "e1"


# Generation bodies


def test_chat_validates_and_names_the_model(worker: WorkerProcess) -> None:
    body = worker.client.post("/v1/chat/completions", json={"messages": USER}).json()
    assert_valid("CreateChatCompletionResponse", body)
    assert body["model"] == "fast"
    assert body["choices"][0]["message"]["content"] == " ".join(f"tok{i}" for i in range(8))


def test_chat_honours_max_tokens(worker: WorkerProcess) -> None:
    body = {"messages": USER, "max_tokens": 3}
    answer = worker.client.post("/v1/chat/completions", json=body).json()
    assert answer["usage"]["completion_tokens"] == 3
    assert answer["choices"][0]["finish_reason"] == "length"


def test_chat_stream_chunks_validate_and_end_with_done(worker: WorkerProcess) -> None:
    events = stream(worker, "/v1/chat/completions", {"messages": USER})
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(event))


def test_chat_stream_without_include_usage_has_no_usage(worker: WorkerProcess) -> None:
    events = stream(worker, "/v1/chat/completions", {"messages": USER})
    assert all("usage" not in json.loads(e) for e in events[:-1])


def test_chat_stream_include_usage_ends_with_usage_chunk(worker: WorkerProcess) -> None:
    body = {"messages": USER, "max_tokens": 5, "stream_options": {"include_usage": True}}
    chunks = [json.loads(e) for e in stream(worker, "/v1/chat/completions", body)[:-1]]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert all(c["usage"] is None for c in chunks[:-1])


def test_usage_is_reported_to_the_gateway_out_of_band(worker: WorkerProcess) -> None:
    """A header on a whole answer, a comment before a stream's [DONE] (workers.wire)."""
    answer = worker.client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 3})
    assert answer.headers["X-Usage-Tokens"] == f"{answer.json()['usage']['prompt_tokens']} 3"
    body = {"prompt": ["a", "b"], "max_tokens": 2, "stream": True}
    streamed = worker.client.post("/v1/completions", json=body).text
    assert streamed.endswith("\n\n: usage 2 4\n\ndata: [DONE]\n\n")
    embedded = worker.client.post("/v1/embeddings", json={"input": ["a b", "c"]})
    assert embedded.headers["X-Usage-Tokens"] == "3 0"


def test_completions_of_two_prompts(worker: WorkerProcess) -> None:
    body = {"prompt": ["a b", "c"], "max_tokens": 2}
    answer = worker.client.post("/v1/completions", json=body).json()
    assert_valid("CreateCompletionResponse", answer)
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_completions_stream_include_usage(worker: WorkerProcess) -> None:
    body = {"prompt": ["a", "b"], "max_tokens": 2, "stream_options": {"include_usage": True}}
    chunks = [json.loads(e) for e in stream(worker, "/v1/completions", body)[:-1]]
    # Only the null finish_reason of chunks before a prompt's last may disagree with the schema.
    for chunk in chunks:
        assert_valid_completion_chunk(chunk)
    assert {c["choices"][0]["index"] for c in chunks[:-1]} == {0, 1}
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_embeddings_one_vector_per_input(worker: WorkerProcess) -> None:
    answer = worker.client.post("/v1/embeddings", json={"input": ["a", "b c"]}).json()
    assert_valid("CreateEmbeddingResponse", answer)
    assert [len(d["embedding"]) for d in answer["data"]] == [8, 8]


def test_embeddings_base64(worker: WorkerProcess) -> None:
    body = {"input": "a", "encoding_format": "base64"}
    answer = worker.client.post("/v1/embeddings", json=body).json()
    assert isinstance(answer["data"][0]["embedding"], str)


def test_more_than_2048_embedding_inputs_is_400(worker: WorkerProcess) -> None:
    response = worker.client.post("/v1/embeddings", json={"input": ["a"] * 2049})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    assert worker.client.post("/v1/embeddings", json={"input": ["a"] * 2048}).status_code == 200


def test_embedding_inputs_over_300k_tokens_in_all_is_400(worker: WorkerProcess) -> None:
    inputs = [" ".join(["w"] * 150)] * 2001  # 300,150 stand-in tokens
    response = worker.client.post("/v1/embeddings", json={"input": inputs})
    assert response.status_code == 400 and "300000" in response.json()["error"]["message"]


def test_embeddings_stop_when_their_client_goes_away() -> None:
    with standin("slow-embed", token_delay=0.05) as w:  # 2,000 inputs: 100 s of work
        w.wait_ready()
        with pytest.raises(httpx.ReadTimeout):
            w.client.post("/v1/embeddings", json={"input": ["x"] * 2000}, timeout=1)
        began = time.monotonic()
        answer = w.client.post("/v1/embeddings", json={"input": "y"}, timeout=30)
        assert answer.status_code == 200 and time.monotonic() - began < 3
        assert [r["outcome"] for r in w.status()["recent"]][:1] == ["cancelled"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_stream_nobody_reads_pauses_its_generation_instead_of_filling_memory() -> None:
    with standin("firehose", token_delay=0, tokens=10_000_000, n_ctx=100_000_000) as w:
        w.wait_ready()
        before = rss_mib(w.proc.pid)
        body = b'{"stream": true, "messages": [{"role": "user", "content": "hi"}]}'
        with socket.create_connection(("127.0.0.1", w.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            time.sleep(4)  # read nothing: at full speed the queue grew ~30 MB a second
            grown = rss_mib(w.proc.pid) - before
        assert grown < 20, f"worker memory grew {grown:.0f} MiB under a stream nobody read"


# Errors


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert_valid("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    assert error["param"] == param
    return error


def test_bad_json_is_400(worker: WorkerProcess) -> None:
    response = worker.client.post("/v1/chat/completions", content=b"{nope")
    assert assert_error(response, 400)["type"] == "invalid_request_error"


def test_missing_messages_is_400(worker: WorkerProcess) -> None:
    assert_error(worker.client.post("/v1/chat/completions", json={}), 400, "messages")


def test_n_choices_each_a_whole_answer_the_prompt_counted_once(worker: WorkerProcess) -> None:
    body = {"messages": USER, "n": 3, "max_tokens": 2}
    answer = worker.client.post("/v1/chat/completions", json=body).json()
    assert_valid("CreateChatCompletionResponse", answer)
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert answer["usage"]["completion_tokens"] == 6
    one = worker.client.post("/v1/chat/completions", json={**body, "n": 1}).json()
    assert answer["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]


def test_n_choices_stream_one_after_another_with_one_usage(worker: WorkerProcess) -> None:
    body = {"messages": USER, "n": 2, "max_tokens": 3, "stream_options": {"include_usage": True}}
    chunks = [json.loads(e) for e in stream(worker, "/v1/chat/completions", body)[:-1]]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    indices = [c["choices"][0]["index"] for c in chunks if c["choices"]]
    assert indices == sorted(indices) and set(indices) == {0, 1}
    roles = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("role")]
    assert len(roles) == 2  # each choice opens with its role
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_completions_give_n_choices_per_prompt(worker: WorkerProcess) -> None:
    body = {"prompt": ["a b", "c"], "n": 2, "max_tokens": 2}
    answer = worker.client.post("/v1/completions", json=body).json()
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert answer["usage"]["prompt_tokens"] == 3  # each prompt once: 2 + 1
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    events = stream(worker, "/v1/completions", streamed)
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1, 2, 3}
    assert chunks[-1]["usage"]["prompt_tokens"] == 3


def test_unknown_path_is_openai_404(worker: WorkerProcess) -> None:
    assert assert_error(worker.client.get("/v1/nothing"), 404)["code"] == "not_found"


def test_context_length_exceeded_is_400(worker: WorkerProcess) -> None:
    body = {"prompt": "w " * 100}
    error = assert_error(worker.client.post("/v1/completions", json=body), 400, "prompt")
    assert error["code"] == "context_length_exceeded"


def test_context_length_exceeded_is_400_when_streaming(worker: WorkerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "w " * 100}], "stream": True}
    response = worker.client.post("/v1/chat/completions", json=body)
    assert assert_error(response, 400, "messages")["code"] == "context_length_exceeded"


# "hello there" counts as 3 prompt tokens here (2 words + 1 per message); n_ctx is 64.


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_past_the_context_is_400_as_openai(worker: WorkerProcess, key: str) -> None:
    response = worker.client.post("/v1/chat/completions", json={"messages": USER, key: 62})
    error = assert_error(response, 400, "messages")
    assert error["code"] == "context_length_exceeded"
    assert error["message"] == (
        "This model's maximum context length is 64 tokens. However, you requested 65 tokens "
        "(3 in the messages, 62 in the completion). Please reduce the length of the messages "
        "or completion."
    )


def test_max_tokens_filling_the_context_exactly_is_accepted(worker: WorkerProcess) -> None:
    body = {"messages": USER, "max_tokens": 61}
    assert worker.client.post("/v1/chat/completions", json=body).status_code == 200


def test_max_tokens_past_the_context_is_400_when_streaming(worker: WorkerProcess) -> None:
    body = {"prompt": "a b c", "max_tokens": 62, "stream": True}
    response = worker.client.post("/v1/completions", json=body)
    assert assert_error(response, 400, "prompt")["code"] == "context_length_exceeded"
    assert "(3 in the prompt, 62 in the completion)" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e400}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "x"}], "top_p": NaN}', None),
        (b"[" * 100_000, None),
    ],
)
def test_non_finite_and_deeply_nested_json_is_400(
    worker: WorkerProcess, raw: bytes, param: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    response = worker.client.post("/v1/chat/completions", content=raw, headers=headers)
    assert_error(response, 400, param)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": [1, 49152]}, "prompt"),
        ("/v1/completions", {"prompt": [[2**40], [1]], "stream": True}, "prompt"),
        ("/v1/chat/completions", {"messages": USER, "logit_bias": {"49152": 1}}, "logit_bias"),
        ("/v1/embeddings", {"input": [[1, 10**12]]}, "input"),
    ],
)
def test_token_ids_past_the_vocabulary_are_400(
    worker: WorkerProcess, path: str, body: dict[str, Any], param: str
) -> None:
    error = assert_error(worker.client.post(path, json=body), 400, param)
    assert "vocabulary has 49152 tokens" in error["message"]


def test_error_mid_stream_is_an_event_without_done() -> None:
    with standin("erring", token_delay=0.0, tokens=8, error_after_tokens=3) as w:
        w.wait_ready()
        events = stream(w, "/v1/chat/completions", {"messages": USER})
    assert "[DONE]" not in events
    assert_valid("ErrorResponse", json.loads(events[-1]))


def test_crash_mid_stream_ends_without_done() -> None:
    with standin("crashing", token_delay=0.0, tokens=8, exit_after_tokens=3) as w:
        w.wait_ready()
        body = {"messages": USER, "stream": True}
        with (
            pytest.raises(httpx.RemoteProtocolError),
            w.client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            list(response.iter_lines())
        assert w.proc.wait(10) == 17


# Lifecycle


def test_loading_answers_503_model_loading() -> None:
    with standin("loading", load_seconds=30) as w:
        assert w.wait_state("loading")["state"] == "loading"
        response = w.client.post("/v1/chat/completions", json={"messages": USER})
        assert assert_error(response, 503)["code"] == "model_loading"


def test_failed_load_reports_error_then_exits_3() -> None:
    with standin("broken", fail_load="no such weights") as w:
        body = w.wait_state("failed", timeout=10)
        assert "no such weights" in body["error"]
        assert w.proc.wait(10) == 3


# Cancellation and concurrency


def test_busy_while_generating(slow: WorkerProcess) -> None:
    body = {"messages": USER, "max_tokens": 20, "stream": True}
    with slow.client.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines)
        assert slow.status()["state"] == "busy"
        list(lines)
    assert slow.status()["state"] == "ready"


def test_disconnect_mid_stream_cancels(slow: WorkerProcess) -> None:
    body = {"messages": USER, "stream": True}
    headers = {"X-Request-Id": "gone-stream"}
    with slow.client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        lines = r.iter_lines()
        next(lines)
        next(lines)
    record = last_record(slow, "gone-stream")
    assert record["outcome"] == "cancelled"
    assert record["finished"] - record["started"] < 2


def test_next_request_starts_at_once_after_disconnect(slow: WorkerProcess) -> None:
    body = {"messages": USER, "stream": True}
    with slow.client.stream("POST", "/v1/chat/completions", json=body) as r:
        next(r.iter_lines())
    began = time.monotonic()
    answer = slow.client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2})
    assert answer.status_code == 200
    assert time.monotonic() - began < 1.0


def test_disconnect_during_non_stream_cancels(slow: WorkerProcess) -> None:
    with pytest.raises(httpx.ReadTimeout):
        slow.client.post(
            "/v1/chat/completions",
            json={"messages": USER},
            headers={"X-Request-Id": "gone-plain"},
            timeout=0.3,
        )
    assert last_record(slow, "gone-plain")["outcome"] == "cancelled"


def test_second_request_waits_for_the_first(slow: WorkerProcess) -> None:
    body = {"messages": USER, "max_tokens": 6}

    def second() -> None:
        headers = {"X-Request-Id": "second"}
        httpx.post(f"{slow.url}/v1/chat/completions", json=body, headers=headers, timeout=30)

    thread = threading.Thread(target=second)
    headers = {"X-Request-Id": "first"}
    with slow.client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers
    ) as response:
        lines = response.iter_lines()
        next(lines)
        thread.start()
        list(lines)
    thread.join()
    first, later = last_record(slow, "first"), last_record(slow, "second")
    assert first["finished"] <= later["started"]


# Lifeline

PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-m", "workers", "--model-name", "orphan",
        "--port", sys.argv[1], "--engine", "standin", "--parent-pid", str(os.getpid())])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def wait_port_ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/status").json()["state"] == "ready":
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("orphan worker never became ready")


def test_worker_dies_with_its_parent() -> None:
    port = free_port()
    command = [sys.executable, "-c", PARENT, str(port)]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        wait_port_ready(port)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while pid_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child_pid)


def test_a_standin_with_concurrency_serves_requests_at_once() -> None:
    options = '{"token_delay": 0.05, "tokens": 6}'
    with WorkerProcess(
        "wide", "--engine", "standin", "--standin-json", options, "--concurrency", "3"
    ) as wide:
        wide.wait_ready()
        body = {"model": "wide", "messages": [{"role": "user", "content": "hi"}]}

        def ask(n: int) -> int:
            headers = {"X-Request-Id": f"wide-{n}"}
            return wide.client.post("/v1/chat/completions", json=body, headers=headers).status_code

        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(ask, range(3))) == [200] * 3
        records = [r for r in wide.status()["recent"] if r["id"].startswith("wide-")]
        assert max(r["started"] for r in records) < min(r["finished"] for r in records)


def test_an_embedding_llama_worker_refuses_concurrency() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers",
            "--model-name",
            "x",
            "--port",
            "1",
            "--model-path",
            "x.gguf",
            "--concurrency",
            "2",
            "--llama-json",
            '{"embedding": true}',
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2 and "--concurrency must be 1 for an embedding" in result.stderr


def test_embedding_policy_dimensions_and_token_ids_end_to_end() -> None:
    with (
        standin("plain", token_delay=0.0) as plain,
        standin("nested", "--matryoshka", token_delay=0.0, embedding_dim=8) as nested,
    ):
        plain.wait_ready()
        nested.wait_ready()
        error = assert_error(
            plain.client.post("/v1/embeddings", json={"input": [[15339, 1917]]}), 400, "input"
        )
        assert "check_embedding_ctx_length=False" in error["message"]
        assert_error(
            plain.client.post("/v1/embeddings", json={"input": "a", "dimensions": 4}),
            400,
            "dimensions",
        )
        body = nested.client.post("/v1/embeddings", json={"input": "a b", "dimensions": 4}).json()
        assert_valid("CreateEmbeddingResponse", body)
        (vector,) = [item["embedding"] for item in body["data"]]
        assert len(vector) == 4 and abs(sum(x * x for x in vector) - 1) < 1e-9


def response_events(worker: WorkerProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    text = worker.client.post("/v1/responses", json={**body, "stream": True}).text
    assert "event: response.created\n" in text  # named like OpenAI's events
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    return [json.loads(event) for event in data[:-1]]


def test_responses_answer_validates_and_counts_tokens(worker: WorkerProcess) -> None:
    body = {"input": "hi", "instructions": "Be brief.", "max_output_tokens": 3}
    response = worker.client.post("/v1/responses", json=body)
    answer = response.json()
    assert_valid("Response", answer)
    assert answer["status"] == "incomplete"  # max_output_tokens cut it
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["output"][0]["content"][0]["text"] == "tok0 tok1 tok2"
    assert answer["usage"]["output_tokens"] == 3 and answer["instructions"] == "Be brief."
    assert response.headers["X-Usage-Tokens"].endswith(" 3")


def test_responses_stream_is_openai_s_event_sequence(worker: WorkerProcess) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    events = response_events(worker, {"input": items})
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == events[-4]["text"] == " ".join(f"tok{i}" for i in range(8))
    assert events[-1]["response"]["usage"]["output_tokens"] == 8


def test_responses_answer_a_forced_tool_call_streamed_and_not(worker: WorkerProcess) -> None:
    tools = [
        {"type": "function", "name": name, "parameters": {"type": "object"}}
        for name in ("get_weather", "get_time")
    ]
    body = {"input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "get_time"}}
    answer = worker.client.post("/v1/responses", json=body).json()
    assert_valid("Response", answer)
    (call,) = answer["output"]
    assert (call["type"], call["name"], call["arguments"]) == ("function_call", "get_time", "{}")
    events = response_events(worker, body)
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert (done["name"], done["arguments"]) == ("get_time", "{}")
    assert events[-1]["response"]["output"][0]["name"] == "get_time"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": "hi", "conversation": {"id": "conv_1"}}, "conversation"),
        ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": ""}, "input"),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format"),
    ],
)
def test_responses_say_what_they_do_not_serve(
    worker: WorkerProcess, body: dict[str, Any], param: str
) -> None:
    assert_error(worker.client.post("/v1/responses", json=body), 400, param)
