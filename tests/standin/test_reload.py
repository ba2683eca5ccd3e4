"""Hot reload of config.yaml under steady load: every kind of change, and no request fails."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    CHAT,
    GatewayProcess,
    assert_error,
    pid_alive,
    sse_data,
    standin,
    wait_until,
)

STEADY = standin("steady", replicas=2, max_queue=64, token_delay=0.005, tokens=5)
LEAVING = standin("leaving", token_delay=0.05, tokens=40)
BASE = {"health": {"interval": 0.5}, "models": [STEADY, LEAVING]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(BASE, tmp_path_factory.mktemp("reload")).start()
    try:
        yield gateway
    finally:
        gateway.stop()


class SteadyLoad:
    """Clients asking `steady` without pause (streams and not), recording every outcome."""

    def __init__(self, gateway: GatewayProcess, clients: int = 3):
        self.gateway = gateway
        self.failures: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, n: int) -> None:
        with self.gateway.client(timeout=30) as client:
            while not self._stop.is_set():
                stream = n % 2 == 1
                body = {"model": "steady", "stream": stream, **CHAT}
                response = client.post("/v1/chat/completions", json=body)
                ok = response.status_code == 200 and (
                    not stream or sse_data(response.text)[-1] == "[DONE]"
                )
                if not ok:
                    self.failures.append(f"{response.status_code} {response.text[:300]}")
                self.done += 1


def apply(gateway: GatewayProcess, config: dict[str, Any], how: str = "http") -> dict[str, Any]:
    gateway.config_path.write_text(yaml.safe_dump(config))
    if how == "sighup":
        assert gateway.proc is not None
        before = admin_config(gateway)["version"]
        gateway.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: admin_config(gateway)["version"] > before, 10)
        assert wait_until(lambda: not admin_config(gateway)["reloading"], 60)
        return admin_config(gateway)
    with gateway.client(timeout=120) as client:
        response = client.post("/admin/reload")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def admin_config(gateway: GatewayProcess) -> dict[str, Any]:
    with gateway.client() as client:
        body: dict[str, Any] = client.get("/admin/config").json()
        return body


def replicas_of(gateway: GatewayProcess, model: str) -> list[dict[str, Any]]:
    return [w for w in gateway.workers() if w["model"] == model]


def answer(gateway: GatewayProcess, model: str) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/v1/chat/completions", json={"model": model, **CHAT})


def test_sighup_adds_a_model_that_serves_once_ready(gateway: GatewayProcess) -> None:
    joining = standin("joining", tokens=3)
    with SteadyLoad(gateway) as load:
        apply(gateway, {**BASE, "models": [STEADY, LEAVING, joining]}, how="sighup")
        assert wait_until(lambda: answer(gateway, "joining").status_code == 200, 15)
    assert not load.failures and load.done > 0


def test_a_removed_model_finishes_its_request_then_stops(gateway: GatewayProcess) -> None:
    (leaving,) = replicas_of(gateway, "leaving")
    result: dict[str, httpx.Response] = {}
    in_flight = threading.Thread(target=lambda: result.update(r=answer(gateway, "leaving")))
    in_flight.start()
    assert wait_until(lambda: replicas_of(gateway, "leaving")[0]["in_flight"] == 1, 5)
    with SteadyLoad(gateway) as load:
        apply(gateway, {**BASE, "models": [STEADY]})
    in_flight.join()
    assert result["r"].status_code == 200
    assert_error(answer(gateway, "leaving"), 404, "model_not_found")
    assert wait_until(lambda: not pid_alive(leaving["pid"]), 5)
    assert not replicas_of(gateway, "leaving")
    assert not load.failures and load.done > 0


def test_replicas_scale_up_and_down_under_load(gateway: GatewayProcess) -> None:
    with SteadyLoad(gateway) as load:
        apply(gateway, {**BASE, "models": [{**STEADY, "replicas": 3}]})
        # Ready, or busy with the steady load's requests: serving either way.
        assert wait_until(
            lambda: (
                [w["state"] in ("ready", "busy") for w in replicas_of(gateway, "steady")]
                == [True] * 3
            ),
            15,
        )
        apply(gateway, {**BASE, "models": [{**STEADY, "replicas": 1}]})
    assert [w["replica"] for w in replicas_of(gateway, "steady")] == [0]
    assert not load.failures and load.done > 0


def test_changed_worker_settings_roll_the_replicas_without_failures(
    gateway: GatewayProcess,
) -> None:
    two = {**STEADY, "replicas": 2}
    apply(gateway, {**BASE, "models": [two]})
    assert wait_until(lambda: len(replicas_of(gateway, "steady")) == 2, 15)
    old_pids = {w["pid"] for w in replicas_of(gateway, "steady")}
    with SteadyLoad(gateway) as load:
        seven = {**two, "standin": {**two["standin"], "tokens": 7}}
        result = apply(gateway, {**BASE, "models": [seven]})
    assert any("rolling" in change for change in result["changes"])
    now = replicas_of(gateway, "steady")
    assert len(now) == 2 and not old_pids & {w["pid"] for w in now}
    content = answer(gateway, "steady").json()["choices"][0]["message"]["content"]
    assert len(content.split()) == 7
    assert not load.failures and load.done > 0


def test_an_invalid_config_changes_nothing_and_is_reported(gateway: GatewayProcess) -> None:
    before = admin_config(gateway)
    pids = {w["pid"] for w in gateway.workers()}
    gateway.config_path.write_text(yaml.safe_dump({"models": [{**STEADY, "replicas": "many"}]}))
    with gateway.client() as client:
        response = client.post("/admin/reload")
    error = assert_error(response, 400, "reload_failed")
    assert "replicas" in error["message"]
    after = admin_config(gateway)
    assert after["version"] == before["version"] and after["models"] == before["models"]
    assert after["last_reload"]["ok"] is False and "replicas" in after["last_reload"]["error"]
    assert {w["pid"] for w in gateway.workers()} == pids


def test_settings_that_fail_to_load_leave_the_old_replicas_serving(
    gateway: GatewayProcess,
) -> None:
    apply(gateway, {**BASE, "models": [STEADY]})
    assert wait_until(lambda: len(replicas_of(gateway, "steady")) == 2, 15)
    pids = {w["pid"] for w in replicas_of(gateway, "steady")}
    broken = {**STEADY, "standin": {**STEADY["standin"], "fail_load": "bad weights"}}
    gateway.config_path.write_text(yaml.safe_dump({**BASE, "models": [broken]}))
    with gateway.client(timeout=60) as client:
        first = assert_error(client.post("/admin/reload"), 400, "reload_failed")
        assert "bad weights" in first["message"]
        assert answer(gateway, "steady").status_code == 200
        assert {w["pid"] for w in replicas_of(gateway, "steady")} == pids
        # The model still runs its old settings, so the same file is tried again.
        assert_error(client.post("/admin/reload"), 400, "reload_failed")


def test_with_watch_on_a_file_change_is_applied_by_itself(gateway: GatewayProcess) -> None:
    apply(gateway, {**BASE, "watch": True, "models": [STEADY]})
    version = admin_config(gateway)["version"]
    config = {**BASE, "watch": True, "models": [STEADY, standin("watched", tokens=2)]}
    gateway.config_path.write_text(yaml.safe_dump(config))
    assert wait_until(lambda: admin_config(gateway)["version"] > version, 10)
    assert wait_until(lambda: answer(gateway, "watched").status_code == 200, 15)
    assert json.loads(answer(gateway, "watched").text)["model"] == "watched"
