"""A key shared by a careless team cannot be locked out, overshoot its tpm, or fill a model's queue
for the other keys: the real gateway over stand-in workers, its limits in this process and in a
real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from tests.support import CHAT, GatewayProcess, api_key, assert_error, running_gateway, standin

SHARED_REDIS = "redis://127.0.0.1:6379/8"  # the machine's Redis (.ci/run starts one)
ADMIN = "sk-admin-0123456789abcdef"
KEYS = {name: f"sk-{name}-0123456789abcdef" for name in ("careless", "burst", "rpm", "team")}
TPM = 20_000
N_CTX = 4096  # the stand-in's context: what one request may use at most, prompt and answer
ANSWER = 3000  # tokens the stand-in produces when max_tokens does not stop it


def config(store: str) -> dict[str, Any]:
    return {
        **({"redis": {"url": SHARED_REDIS}} if store == "redis" else {}),
        "auth": {
            "keys": [
                api_key("ops", ADMIN, admin=True),
                api_key("careless", KEYS["careless"], tpm=2000),
                api_key("burst", KEYS["burst"], tpm=TPM),
                api_key("rpm", KEYS["rpm"], rpm=1),
                api_key("team", KEYS["team"]),
            ]
        },
        "models": [
            standin("m", replicas=4, max_queue=64, token_delay=0.0002, tokens=ANSWER, n_ctx=N_CTX)
        ],
    }


@pytest.fixture(scope="module", params=["local", "redis"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    if request.param == "redis":
        redis.Redis.from_url(SHARED_REDIS).flushdb()
    folder = tmp_path_factory.mktemp(request.param)
    yield from running_gateway(config(request.param), folder, api_key=ADMIN)


def chat(gateway: GatewayProcess, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "m", **CHAT, **extra},
        headers={"Authorization": f"Bearer {KEYS[key]}"},
        timeout=60,
    )


def used_tokens(gateway: GatewayProcess, key: str) -> int:
    with gateway.client() as client:
        rows = client.get("/admin/usage").json()["data"]
    return sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows if r["key"] == key)


def test_a_refused_request_gives_its_reservation_back(gateway: GatewayProcess) -> None:
    # Over the context: the worker refuses it, having produced nothing. Its reservation (a
    # billion tokens before, the model's whole context now) must not lock the key out.
    assert_error(chat(gateway, "careless", max_tokens=1_000_000_000), 400)
    words = " ".join(["word"] * 780_000)  # 3.9 MB: far over the context, under max_body_bytes
    huge = {"messages": [{"role": "user", "content": words}]}
    assert_error(chat(gateway, "careless", **huge), 400)
    answer = chat(gateway, "careless", max_tokens=5)
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["x-ratelimit-remaining-tokens"]) >= 2000 - 5 - 100


def test_tpm_without_max_tokens_overshoots_by_at_most_one_context(
    gateway: GatewayProcess,
) -> None:
    began = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: chat(gateway, "burst"), range(20)))
    elapsed = time.monotonic() - began
    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert served and refused and len(served) + len(refused) == 20
    # Each reserves what it may produce (the context), so the bucket stops admitting once the
    # admitted ones could use it up: the key used at most its minute, what refilled meanwhile and
    # one request's context. (Reserving max_tokens' default of 256 admitted all 20: 60,000.)
    assert used_tokens(gateway, "burst") <= TPM + elapsed * TPM / 60 + N_CTX
    # Retry-After tells the truth: a retry that waits it out is served.
    wait = max(int(a.headers["retry-after"]) for a in refused)
    time.sleep(wait)
    assert chat(gateway, "burst", max_tokens=5).status_code == 200


def test_an_admin_resets_a_key_s_limits(gateway: GatewayProcess) -> None:
    assert chat(gateway, "rpm", max_tokens=1).status_code == 200
    assert_error(chat(gateway, "rpm", max_tokens=1), 429)
    with httpx.Client(base_url=gateway.url, timeout=10) as anyone:
        refused = anyone.post(
            "/admin/keys/rpm/reset", headers={"Authorization": f"Bearer {KEYS['team']}"}
        )
        assert_error(refused, 403)
    with gateway.client() as admin:
        assert_error(admin.post("/admin/keys/nobody/reset"), 404, "not_found")
        reset = admin.post("/admin/keys/rpm/reset")
    assert reset.status_code == 200 and reset.json() == {"key": "rpm", "reset": True}
    assert chat(gateway, "rpm", max_tokens=1).status_code == 200


@pytest.fixture(scope="module")
def one_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "auth": {
            "keys": [
                api_key("ops", ADMIN, admin=True),
                api_key("heavy", KEYS["team"]),
                api_key("light", KEYS["rpm"]),
            ]
        },
        "models": [standin("q", max_queue=8, token_delay=0.05, tokens=6)],
    }
    yield from running_gateway(config, tmp_path_factory.mktemp("queue"), api_key=ADMIN)


def test_one_key_flooding_the_queue_leaves_room_for_another(one_replica: GatewayProcess) -> None:
    def ask(key: str, delay: float) -> tuple[int, float]:
        time.sleep(delay)
        answer = httpx.post(
            one_replica.url + "/v1/chat/completions",
            json={"model": "q", **CHAT},
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        )
        return answer.status_code, time.monotonic()

    with ThreadPoolExecutor(36) as pool:
        heavy = [pool.submit(ask, KEYS["team"], 0) for _ in range(30)]
        light = [pool.submit(ask, KEYS["rpm"], 0.5) for _ in range(3)]  # the queue is full now
        heavy_done = [f.result() for f in heavy]
        light_done = [f.result() for f in light]
    assert sorted({status for status, _ in heavy_done}) == [200, 429]  # it did fill the queue
    assert [status for status, _ in light_done] == [200, 200, 200]
    # Served in its weight's turn, not after everything the heavy key queued.
    last_heavy = max(at for status, at in heavy_done if status == 200)
    assert max(at for _, at in light_done) < last_heavy
