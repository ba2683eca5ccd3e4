"""The Grafana dashboard against a real Prometheus scraping a real gateway under a little load:
every panel's PromQL must return data. Debian's `prometheus` package (`make setup` and .ci/run
install it when missing)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    CHAT,
    REPO,
    GatewayProcess,
    free_port,
    running_gateway,
    standin,
    wait_until,
)

DASHBOARD = REPO / "deploy/grafana/dashboards/llm-gateway.json"
SHIPPED_CONFIG = REPO / "deploy/prometheus/prometheus.yml"
CONFIG = {
    "models": [
        standin("pair", replicas=2),
        standin("slow", max_queue=1, token_delay=0.1, tokens=10),
    ]
}


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: `apt-get install prometheus` (make setup does it as root)"
    return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="module")
def prometheus(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus, scraping the gateway every half second with the shipped job."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["global"]["scrape_interval"] = "500ms"
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{gateway.port}"]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (folder / "log").open("wb") as log:
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _up(url), 30), (folder / "log").read_text()[-2000:]
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _up(url: str) -> bool:
    try:
        return bool(query(url, 'up{job="llm-gateway"} == 1'))
    except (httpx.HTTPError, ValueError):  # not listening yet, or 503 while it starts
        return False


def query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def a_little_load(gateway: GatewayProcess) -> None:
    """A full queue (429), an unknown model (404), then plain and streamed answers."""
    with gateway.client() as client:

        def ask_slow() -> None:
            client.post("/v1/chat/completions", json={"model": "slow", **CHAT})

        def admin() -> dict[str, Any]:
            body: dict[str, Any] = client.get("/admin/workers").json()
            return body

        waiting = [threading.Thread(target=ask_slow) for _ in range(2)]
        waiting[0].start()
        assert wait_until(lambda: any(w["in_flight"] for w in admin()["data"]), 5)
        waiting[1].start()
        assert wait_until(lambda: admin()["queued"]["slow"] == 1, 5)
        refused = client.post("/v1/chat/completions", json={"model": "slow", **CHAT})
        assert refused.status_code == 429
        client.post("/v1/chat/completions", json={"model": "nope", **CHAT})
        for i in range(20):
            client.post(
                "/v1/chat/completions", json={"model": "pair", "stream": i % 2 == 0, **CHAT}
            )
            time.sleep(0.1)
        for thread in waiting:
            thread.join()


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_the_shipped_prometheus_config_is_valid() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(SHIPPED_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_metrics_pass_promtool(gateway: GatewayProcess) -> None:
    text = httpx.get(gateway.url + "/metrics").text
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_panel_returns_data(gateway: GatewayProcess, prometheus: str) -> None:
    a_little_load(gateway)
    time.sleep(2)  # a few more scrapes after the load
    assert len(panel_queries()) >= 17
    for title, expr in panel_queries():
        promql = expr.replace("$__rate_interval", "1m").replace("$model", ".*")
        result = query(prometheus, promql)
        values = [float(series["value"][1]) for series in result]
        assert any(not math.isnan(v) for v in values), f"{title}: no data for {promql}"
