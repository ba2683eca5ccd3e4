"""Named API keys on the real gateway: who may use which model, admin keys, the key's name in
the request log and the metrics (never the key), keys added and removed by a reload."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.standin.test_metrics import scrape, value
from tests.support import (
    CHAT,
    JSON_LOG,
    REPO,
    GatewayProcess,
    api_key,
    assert_error,
    running_gateway,
    standin,
    wait_until,
)

ADMIN = "sk-admin-0123456789abcdef"
TEAM_A = "sk-team-a-0123456789abcdef"
TEAM_B = "sk-team-b-0123456789abcdef"
KEYS = [
    api_key("ops", ADMIN, admin=True),
    api_key("team-a", TEAM_A, models=["fast*"]),
    api_key("team-b", TEAM_B),
]
CONFIG: dict[str, Any] = {
    "auth": {"keys": KEYS},
    "models": [
        {**standin("fast"), "aliases": ["fast-alias"]},
        standin("slow", token_delay=0.1, tokens=10),
    ],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("keys"), api_key=ADMIN, log=JSON_LOG)


def as_key(gateway: GatewayProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"})


def test_a_key_sees_and_uses_only_its_models(gateway: GatewayProcess) -> None:
    with as_key(gateway, TEAM_A) as client:
        listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert sorted(listed) == ["fast", "fast-alias"]
        assert (
            client.post("/v1/chat/completions", json={"model": "fast-alias", **CHAT}).status_code
            == 200
        )
        error = assert_error(
            client.post("/v1/chat/completions", json={"model": "slow", **CHAT}),
            404,
            "model_not_found",
        )
        assert "slow" not in error["message"].split("Available models:")[1]  # as if not there
        assert_error(client.get("/v1/models/slow"), 404, "model_not_found")
    with as_key(gateway, TEAM_B) as client:
        assert (
            client.post("/v1/chat/completions", json={"model": "slow", **CHAT}).status_code == 200
        )


def test_the_official_client_works_with_a_key_and_azure_s_header_too(
    gateway: GatewayProcess,
) -> None:
    client = OpenAI(base_url=gateway.url + "/v1", api_key=TEAM_B, max_retries=0)
    assert client.chat.completions.create(model="fast", **CHAT).choices  # type: ignore[call-overload]
    response = httpx.get(gateway.url + "/v1/models", headers={"api-key": TEAM_B})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/workers"),
        ("GET", "/admin/config"),
        ("GET", "/admin/requests"),
        ("GET", "/admin/stats"),
        ("POST", "/admin/models/x/unload"),
        ("POST", "/admin/workers/x/0/restart"),
        ("POST", "/admin/keys/team-b/reset"),
        ("POST", "/admin/reload"),
    ],
)
def test_admin_routes_need_an_admin_key(gateway: GatewayProcess, method: str, path: str) -> None:
    assert_error(httpx.request(method, gateway.url + path), 401, "invalid_api_key")
    with as_key(gateway, TEAM_B) as client:
        error = assert_error(client.request(method, path), 403, "forbidden")
        assert "team-b" in error["message"] and TEAM_B not in error["message"]


def test_a_401_says_it_in_openai_s_words(gateway: GatewayProcess) -> None:
    # LiteLLM's client tells an AuthenticationError by this opening (else a BadRequestError).
    for headers in ({}, {"Authorization": "Bearer sk-" + "w" * 24}):
        for path in ("/v1/models", "/admin/workers"):
            error = assert_error(httpx.get(gateway.url + path, headers=headers), 401)
            assert error["message"].startswith("Incorrect API key provided"), error


def test_head_answers_as_get_without_a_body(gateway: GatewayProcess) -> None:
    for path, key in (("/health", None), ("/ready", None), ("/ui", None), ("/v1/models", TEAM_B)):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        got = httpx.get(gateway.url + path, headers=headers)
        head = httpx.head(gateway.url + path, headers=headers)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))


def test_probes_and_metrics_need_no_key(gateway: GatewayProcess) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(gateway.url + path).status_code == 200


def records(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line]


def test_the_key_s_name_is_in_the_request_log_and_metrics_never_the_key(
    gateway: GatewayProcess,
) -> None:
    with as_key(gateway, TEAM_B) as client:
        client.post(
            "/v1/chat/completions",
            json={"model": "fast", "stream": True, **CHAT},
            headers={"X-Request-ID": "keyed-1"},
        )
    httpx.get(gateway.url + "/v1/models", headers={"Authorization": "Bearer sk-wrong-0123456789"})
    assert wait_until(lambda: any(r.get("request_id") == "keyed-1" for r in records(gateway)), 5)
    (logged,) = [r for r in records(gateway) if r.get("request_id") == "keyed-1"]
    assert logged["key"] == "team-b" and logged["completion_tokens"] == 8
    samples = scrape(gateway)
    assert (
        value(
            samples,
            "llm_gateway_requests_total",
            model="fast",
            endpoint="chat_completions",
            status="200",
            key="team-b",
        )
        >= 1
    )
    assert (
        value(
            samples,
            "llm_gateway_completion_tokens_total",
            model="fast",
            endpoint="chat_completions",
            key="team-b",
        )
        >= 8
    )
    text = gateway.log_path.read_text() + httpx.get(gateway.url + "/metrics").text
    for key in (ADMIN, TEAM_A, TEAM_B, "sk-wrong"):
        assert key not in text


def test_a_reload_adds_and_removes_keys_without_dropping_a_request(
    gateway: GatewayProcess,
) -> None:
    new_key = "sk-team-c-0123456789abcdef"
    config = {**CONFIG, "auth": {"keys": [*KEYS[:2], api_key("team-c", new_key)]}}
    outcome: list[int] = []
    with as_key(gateway, TEAM_B) as client:
        slow = threading.Thread(
            target=lambda: outcome.append(
                client.post(
                    "/v1/chat/completions", json={"model": "slow", **CHAT}, timeout=30
                ).status_code
            )
        )
        slow.start()  # in flight under team-b while team-b is removed
        assert wait_until(
            lambda: any(w["in_flight"] for w in gateway.workers() if w["model"] == "slow"), 5
        )
        gateway.config_path.write_text(yaml.safe_dump(config))
        try:
            with gateway.client() as admin:
                changes = admin.post("/admin/reload").json()["changes"]
            assert "key team-c added" in changes and "key team-b removed" in changes
            with as_key(gateway, new_key) as team_c:
                assert team_c.get("/v1/models").status_code == 200
            assert_error(client.get("/v1/models"), 401, "invalid_api_key")
            slow.join()
            assert outcome == [200]
        finally:
            gateway.config_path.write_text(yaml.safe_dump(CONFIG))
            with gateway.client() as admin:
                assert admin.post("/admin/reload").status_code == 200


def test_keygen_prints_a_key_and_the_lines_that_admit_it(tmp_path: Any) -> None:
    command = [sys.executable, "-m", "gateway", "keygen", "--name", "team-z"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout
    key = next(line for line in printed.splitlines() if line.startswith("sk-"))
    entry = yaml.safe_load(
        "\n".join(line for line in printed.splitlines() if not line.startswith(("#", "sk-")))
    )
    assert entry[0]["name"] == "team-z" and key not in printed.split(key, 1)[1]
    config = {"auth": {"keys": entry}, "models": [standin("m")]}
    gateway = GatewayProcess(config, tmp_path, api_key=key).start()
    try:
        with gateway.client() as client:
            assert (
                client.post("/v1/chat/completions", json={"model": "m", **CHAT}).status_code == 200
            )
        assert_error(httpx.get(gateway.url + "/v1/models"), 401, "invalid_api_key")
    finally:
        gateway.stop()


def test_no_keys_on_a_public_address_refuses_to_start(tmp_path: Any) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"models": [standin("m")]}))
    command = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(tmp_path / "config.yaml"),
        "--host",
        "0.0.0.0",
        "--port",
        "0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert "listens on 0.0.0.0 with no API keys" in done.stderr


def test_metrics_may_be_kept_to_key_holders(tmp_path: Any) -> None:
    scraper = "sk-prometheus-0123456789abcdef"
    config = {
        "server": {"metrics_auth": True},
        "auth": {"keys": [api_key("prometheus", scraper, models=[])]},
        "models": [standin("m")],
    }
    gateway = GatewayProcess(config, tmp_path, api_key=scraper).start()
    try:
        assert_error(httpx.get(gateway.url + "/metrics"), 401, "invalid_api_key")
        with gateway.client() as client:
            assert "llm_gateway_requests_total" in client.get("/metrics").text
            assert client.get("/v1/models").json()["data"] == []  # a scraper uses no model
        assert httpx.get(gateway.url + "/ready").status_code == 200  # the probes stay open
    finally:
        gateway.stop()
