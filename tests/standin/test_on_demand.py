"""On-demand replicas on real gateway and stand-in worker processes: loading on first use, idle
stops, LRU eviction under a memory budget, never evicting busy or `min` replicas, 503 when
nothing fits, scale-up on queue depth, and placement across (budgeted) GPUs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    CHAT,
    GatewayProcess,
    assert_error,
    assert_valid,
    pid_alive,
    sse_data,
    standin,
    wait_until,
)

MiB = 1 << 20


def on_demand(
    name: str, low: int = 0, high: int = 1, mib: int = 100, **fields: Any
) -> dict[str, Any]:
    entry = standin(name, **fields.pop("options", {}))
    return {**entry, "replicas": {"min": low, "max": high}, "memory": f"{mib}MiB", **fields}


def config(
    *models: dict[str, Any],
    budget: str = "250MiB",
    residency: float = 0,
    spare: bool = False,
    **top: Any,
) -> dict[str, Any]:
    return {
        "models": list(models),
        "memory": {"cpu": budget},
        "scaling": {"min_residency": residency, "spare_worker": spare},
        **top,
    }


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Start a gateway on a config; stop it after the test and check no worker outlived it."""
    started: list[GatewayProcess] = []
    pids: set[int] = set()

    def run(cfg: dict[str, Any]) -> GatewayProcess:
        gateway = GatewayProcess(cfg, tmp_path, log=("--log-level", "info")).start()
        started.append(gateway)
        return gateway

    yield run
    for gateway in started:
        pids |= seen_pids.get(gateway.port, set())
        gateway.stop()
    assert all(wait_until(lambda p=pid: not pid_alive(p), 10) for pid in pids)


seen_pids: dict[int, set[int]] = {}


def live(gateway: GatewayProcess, model: str | None = None) -> list[dict[str, Any]]:
    """The gateway's local replicas that hold (or are loading) a model, noting their pids."""
    workers = [w for w in gateway.workers() if w["state"] not in ("draining", "stopped")]
    seen_pids.setdefault(gateway.port, set()).update(w["pid"] for w in workers if w["pid"])
    return [w for w in workers if model is None or w["model"] == model]


def chat(gateway: GatewayProcess, model: str, **body: Any) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/v1/chat/completions", json={"model": model, **CHAT, **body})


def status_of(gateway: GatewayProcess, model: str) -> str:
    with gateway.client() as client:
        entry = client.get(f"/v1/models/{model}").json()
    assert_valid("Model", entry)
    state: str = entry["status"]["value"]
    return state


def test_a_model_with_min_0_loads_on_its_first_request(start: Any) -> None:
    gateway = start(config(on_demand("lazy", options={"load_seconds": 0.5})))
    assert live(gateway, "lazy") == [] and status_of(gateway, "lazy") == "unloaded"
    ready = httpx.get(gateway.url + "/ready").json()
    assert ready["status"] == "ready" and ready["models"]["lazy"]["state"] == "unloaded"
    response = chat(gateway, "lazy")
    assert response.status_code == 200, response.text
    assert_valid("CreateChatCompletionResponse", response.json())
    assert int(response.headers["x-queue-wait-ms"]) >= 400  # it waited for the load
    (replica,) = live(gateway, "lazy")
    assert replica["state"] == "ready" and replica["load_seconds"] >= 0.5
    assert status_of(gateway, "lazy") == "loaded"


def test_a_stream_waiting_for_a_load_is_told_so(start: Any) -> None:
    gateway = start(config(on_demand("lazy", options={"load_seconds": 0.5})))
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "lazy", "stream": True, **CHAT}
        )
    assert response.text.startswith(": queued position=1 loading\n\n"), response.text[:200]
    assert sse_data(response.text)[-1] == "[DONE]"


def test_an_idle_replica_above_min_stops_after_idle_ttl(start: Any) -> None:
    gateway = start(config(on_demand("brief", idle_ttl=1)))
    assert chat(gateway, "brief").status_code == 200
    assert len(live(gateway, "brief")) == 1
    assert wait_until(lambda: not live(gateway, "brief"), 10)
    assert status_of(gateway, "brief") == "unloaded"
    assert chat(gateway, "brief").status_code == 200  # and it comes back when asked for


def test_the_least_recently_used_idle_replica_is_evicted_for_a_new_one(start: Any) -> None:
    gateway = start(config(on_demand("a"), on_demand("b"), on_demand("c")))  # room for two
    for model in ("a", "b", "a"):  # a is used after b: b is the least recently used
        assert chat(gateway, model).status_code == 200
    assert chat(gateway, "c").status_code == 200
    assert sorted(w["model"] for w in live(gateway)) == ["a", "c"]
    assert "b[0]: evicted (least recently used)" in gateway.log_path.read_text()


def test_a_busy_replica_is_never_evicted_the_new_one_waits_for_it(start: Any) -> None:
    slow = {"token_delay": 0.3, "tokens": 6}
    gateway = start(config(on_demand("a", options=slow), on_demand("b"), budget="150MiB"))
    assert chat(gateway, "a", max_tokens=1).status_code == 200  # a loaded, holds the budget
    first = threading.Thread(target=chat, args=(gateway, "a"))
    first.start()  # a is busy for ~2 s
    assert wait_until(lambda: live(gateway, "a")[0]["in_flight"] == 1, 5)
    began = time.monotonic()
    response = chat(gateway, "b")
    first.join()
    assert response.status_code == 200, response.text
    assert time.monotonic() - began > 1.0  # it waited for a to finish before evicting it
    assert [w["model"] for w in live(gateway)] == ["b"]


def test_min_replicas_are_never_evicted_and_a_request_that_cannot_fit_gets_503(
    start: Any,
) -> None:
    gateway = start(
        config(on_demand("pinned", low=1, mib=100), on_demand("extra", mib=100), budget="150MiB")
    )
    response = chat(gateway, "extra")
    error = assert_error(response, 503, "insufficient_memory")
    assert "extra[0]" in error["message"] and "pinned[0] 100.0 MiB (min)" in error["message"]
    assert [w["model"] for w in live(gateway)] == ["pinned"]
    assert chat(gateway, "pinned").status_code == 200


def test_a_replica_loaded_just_now_is_not_evicted_until_min_residency(start: Any) -> None:
    gateway = start(config(on_demand("a"), on_demand("b"), budget="150MiB", residency=2))
    assert chat(gateway, "a").status_code == 200
    loaded = live(gateway, "a")[0]["loaded_at"]
    assert chat(gateway, "b").status_code == 200
    (b,) = live(gateway, "b")
    assert b["state_since"] - loaded >= 2  # b started once a had been resident 2 s


def test_more_waiting_than_scale_up_queue_starts_another_replica(start: Any) -> None:
    slow = {"token_delay": 0.2, "tokens": 20}  # 4 s each: the first outlasts the checks below
    gateway = start(config(on_demand("hot", low=1, high=2, scale_up_queue=2, options=slow)))
    threads = [threading.Thread(target=chat, args=(gateway, "hot")) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: live(gateway, "hot")[0]["in_flight"] == 1, 5)
    time.sleep(1.5)
    assert len(live(gateway, "hot")) == 1  # one waiting is fewer than scale_up_queue
    third = threading.Thread(target=chat, args=(gateway, "hot"))
    third.start()
    assert wait_until(lambda: len(live(gateway, "hot")) == 2, 5)
    for thread in [*threads, third]:
        thread.join()


def test_gpus_auto_spreads_a_models_replicas_over_the_gpus_with_most_free_memory(
    start: Any,
) -> None:
    gpus = {"cpu": "1GiB", 0: "300MiB", 1: "400MiB", 2: "100MiB"}
    big = on_demand("big", low=1, high=1, mib=250, gpus="auto")
    spread = on_demand("spread", low=2, high=3, mib=100, gpus="auto")
    gateway = start({**config(big, spread), "memory": gpus})
    devices = {(w["model"], w["replica"]): w["device"] for w in live(gateway)}
    # big first on the freest (1: 400), then spread on 0 (300 free), then 1 (150 free left).
    assert devices == {("big", 0): "1", ("spread", 0): "0", ("spread", 1): "1"}
    (status,) = [gateway.worker_status("spread", 1)]
    assert status["device"] == "1"  # what the worker was given: CUDA_VISIBLE_DEVICES=1


def spares(gateway: GatewayProcess) -> list[int]:
    """The gateway's standby worker processes (`python -m workers --standby`) still waiting
    (one that became a replica keeps its command line)."""
    assert gateway.proc is not None
    replicas = {w["pid"] for w in live(gateway)}
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if (
                b"--standby" in cmdline
                and ppid == gateway.proc.pid
                and int(entry.name) not in replicas
            ):
                found.append(int(entry.name))
    return found


def test_a_replica_loaded_on_demand_starts_in_a_spare_worker_already_imported(
    start: Any,
) -> None:
    gateway = start(config(on_demand("lazy"), spare=True))
    assert wait_until(lambda: len(spares(gateway)) == 1, 10)
    (spare,) = spares(gateway)
    assert chat(gateway, "lazy").status_code == 200
    (replica,) = live(gateway, "lazy")
    assert replica["pid"] == spare  # the spare became the replica
    assert wait_until(lambda: len(spares(gateway)) == 1 and spares(gateway) != [spare], 10)


def test_a_model_kept_busy_does_not_starve_one_waiting_for_its_memory(start: Any) -> None:
    busy = {"token_delay": 0.1, "tokens": 5}  # 0.5 s a request
    gateway = start(
        config(on_demand("a", options=busy), on_demand("b"), budget="150MiB", residency=1)
    )
    assert chat(gateway, "a").status_code == 200
    stop = threading.Event()
    served: list[int] = []

    def keep_a_busy() -> None:  # two clients: a always has a request in flight or queued
        while not stop.is_set():
            served.append(chat(gateway, "a").status_code)

    clients = [threading.Thread(target=keep_a_busy) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.5)
        began = time.monotonic()
        response = chat(gateway, "b")
        waited = time.monotonic() - began
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert response.status_code == 200, response.text
    assert waited < 10, waited  # preempted after ~1 s of patience, not the 30 s queue timeout
    assert "a[0]: evicted (in use, preempted after a wait)" in gateway.log_path.read_text()
    assert set(served) == {200}  # a's requests were served before and after, none failed


def test_a_reload_adds_an_on_demand_model_and_a_smaller_budget_applies_to_the_next_start(
    start: Any,
) -> None:
    first = config(on_demand("a"))
    gateway = start(first)
    assert chat(gateway, "a").status_code == 200
    second = config(on_demand("a"), on_demand("b"), budget="150MiB")
    gateway.config_path.write_text(yaml.safe_dump(second))
    with gateway.client() as client:
        reload = client.post("/admin/reload")
    assert reload.status_code == 200 and "added b (1 replicas)" in reload.json()["changes"]
    assert live(gateway, "b") == [] and status_of(gateway, "b") == "unloaded"
    assert chat(gateway, "b").status_code == 200  # loaded on demand, a evicted: 150 MiB
    assert [w["model"] for w in live(gateway)] == ["b"]


def test_an_admin_loads_and_unloads_a_model_and_restarts_a_replica(start: Any) -> None:
    gateway = start(
        config(on_demand("a"), on_demand("b"), on_demand("fixed", low=1), budget="250MiB")
    )
    with gateway.client() as client:
        loaded = client.post("/admin/models/a/load")
        assert loaded.status_code == 200 and loaded.json() == {"model": "a", "started": "a[0]"}
        assert wait_until(lambda: status_of(gateway, "a") == "loaded", 10)
        assert_error(client.post("/admin/models/a/load"), 400)  # at its max already
        assert_error(client.post("/admin/models/nope/load"), 404, "model_not_found")
        # b needs a's memory (fixed's replica is its min): a is evicted for it.
        assert client.post("/admin/models/b/load").json()["started"] == "b[0]"
        assert wait_until(lambda: sorted(w["model"] for w in live(gateway)) == ["b", "fixed"], 10)
        unloaded = client.post("/admin/models/b/unload").json()
        assert unloaded == {"model": "b", "stopped": ["b[0]"]} and not live(gateway, "b")
        assert client.post("/admin/models/fixed/unload").json()["stopped"] == []  # its min stays
        (before,) = live(gateway, "fixed")
        restarted = client.post("/admin/workers/fixed/0/restart").json()
        assert restarted == {"model": "fixed", "restarted": "fixed[0]"}
        assert wait_until(lambda: [w["state"] for w in live(gateway, "fixed")] == ["ready"], 10)
        assert live(gateway, "fixed")[0]["pid"] != before["pid"]
        assert_error(client.post("/admin/workers/fixed/7/restart"), 400)
