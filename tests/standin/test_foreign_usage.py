"""A key's tokens counted from a server that is not our worker (a remote OpenAI server): from its
answers' `usage`, a stream's asked for and taken out again, so the client gets what it asked."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.standin.test_upstreams import NODE_KEY, RemoteWorker, gateway_of, upstream
from tests.support import CHAT, GatewayProcess, api_key, sse_data, wait_until

ADMIN, TEAM = "sk-admin-0123456789abcdef", "sk-team-0123456789abcdef"


@pytest.fixture(scope="module")
def remote_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    remote = RemoteWorker("there", tokens=6).start()
    keys = [api_key("ops", ADMIN, admin=True), api_key("team", TEAM, tpm=10_000)]
    config = {
        "auth": {"keys": keys},
        "models": [{"name": "far", "upstreams": [upstream(remote.url)]}],
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NODE_KEY", NODE_KEY)
        with gateway_of(config, tmp_path_factory.mktemp("far"), api_key=ADMIN) as gateway:
            assert wait_until(lambda: gateway.workers()[0]["state"] == "ready", 10)
            yield gateway
    remote.kill()


def used(gateway: GatewayProcess) -> tuple[int, int]:
    with gateway.client() as client:
        rows = [r for r in client.get("/admin/usage").json()["data"] if r["key"] == "team"]
    return sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)


def ask(gateway: GatewayProcess, **extra: object) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "far", **CHAT, **extra},
        headers={"Authorization": f"Bearer {TEAM}"},
        timeout=30,
    )


def test_a_remote_s_tokens_count_for_the_key_streamed_or_not(remote_only: GatewayProcess) -> None:
    before = used(remote_only)
    answer = ask(remote_only)
    assert answer.json()["usage"]["completion_tokens"] == 6
    streamed = ask(remote_only, stream=True)
    chunks = [json.loads(d) for d in sse_data(streamed.text) if d != "[DONE]"]
    assert chunks and all(c["choices"] for c in chunks)  # no usage chunk: the client asked none
    asked = ask(remote_only, stream=True, stream_options={"include_usage": True})
    last = [json.loads(d) for d in sse_data(asked.text) if d != "[DONE]"][-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 6  # it asked: kept
    assert wait_until(lambda: used(remote_only)[1] - before[1] == 18, 5), used(remote_only)
