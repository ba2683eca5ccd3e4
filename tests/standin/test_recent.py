"""`/admin/requests` and `/admin/stats` on the real gateway with a stand-in worker: what the
status page shows of the last requests and the last minutes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest

from tests.support import CHAT, GatewayProcess, running_gateway, standin


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    slow = standin("slow", token_delay=0.1, tokens=15)  # 1.5 s a request, one at a time
    yield from running_gateway(
        {"models": [slow]}, tmp_path_factory.mktemp("recent"), log=("--log-level", "info")
    )


def admin(gateway: GatewayProcess, path: str) -> list[dict[str, Any]]:
    with gateway.client() as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_the_last_requests_and_the_last_seconds_show_what_happened(
    gateway: GatewayProcess,
) -> None:
    def ask(stream: bool) -> None:
        with gateway.client() as client:
            client.post("/v1/chat/completions", json={"model": "slow", "stream": stream, **CHAT})

    askers = [threading.Thread(target=ask, args=(n % 2 == 0,)) for n in range(3)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    requests = admin(gateway, "/admin/requests?limit=3")
    assert len(requests) == 3 and requests[0]["time"] >= requests[-1]["time"]  # newest first
    assert {r["model"] for r in requests} == {"slow"} and {r["status"] for r in requests} == {200}
    assert sorted(r["queue_wait_ms"] > 1000 for r in requests) == [False, True, True]
    streamed = [r for r in requests if r["ttft_ms"] is not None]
    assert len(streamed) == 2 and all(r["completion_tokens"] == 15 for r in requests)
    seconds = admin(gateway, "/admin/stats")
    assert sum(s["requests"] for s in seconds) == 3 and max(s["queued"] for s in seconds) >= 1
    assert any(s["ttft_ms"] is not None for s in seconds)
    assert admin(gateway, "/admin/requests?limit=1") == requests[:1]


def test_the_status_page_and_its_files_are_served_and_point_at_the_admin_data(
    gateway: GatewayProcess,
) -> None:
    with gateway.client() as client:
        page = client.get("/ui")
        script = client.get("/ui/app.js")
        style = client.get("/ui/style.css")
        missing = client.get("/ui/nope.js")
        stats = client.get("/admin/stats").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/app.js"></script>' in page.text and "/ui/style.css" in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    for path in ("/admin/workers", "/admin/requests", "/admin/stats", "/admin/reload"):
        assert path in script.text  # the page's data: each endpoint tested on its own above
    assert "sessionStorage" in script.text and "localStorage" not in script.text
    assert missing.status_code == 404
    assert stats["version"] == metadata.version("llm-gateway") and stats["config_version"] == 1
