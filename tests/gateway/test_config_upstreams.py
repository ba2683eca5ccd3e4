"""`models[].upstreams`: remote replicas in the config, and what a reload does with them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.config.file import ConfigError, DnsUpstream, GatewayConfig, parse_config
from gateway.pool.plan import plan_reload


def parse(*models: dict[str, Any]) -> GatewayConfig:
    return parse_config({"models": list(models)}, base_dir=Path.cwd())


def remote(**fields: Any) -> dict[str, Any]:
    return {"name": "m", "upstreams": [{"url": "http://10.0.0.5:9000/v1", **fields}]}


def test_a_model_may_be_served_by_upstreams_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE5_KEY", "secret-value")
    (model,) = parse(remote(capacity=4, api_key_env="NODE5_KEY", upstream_model="qwen")).models
    assert (model.replicas, model.path) == (0, None)  # no local replica: no file to load
    (upstream,) = model.upstreams
    assert (upstream.url, upstream.root, upstream.capacity) == (
        "http://10.0.0.5:9000/v1",
        "http://10.0.0.5:9000",
        4,
    )
    assert (upstream.api_key, upstream.upstream_model) == ("secret-value", "qwen")
    assert "secret-value" not in repr(upstream)


def test_a_trailing_slash_is_dropped_and_any_path_kept() -> None:
    (model,) = parse(remote(url="https://h.example/openai/v1/")).models
    assert model.upstreams[0].url == "https://h.example/openai/v1"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "10.0.0.5:9000"}, r"upstreams\[0\]\.url: expected an http"),
        ({"url": "http://h/v1?x=1"}, r"upstreams\[0\]\.url: a base URL has no query"),
        ({"capacity": 0}, r"upstreams\[0\]\.capacity: expected a positive integer"),
        ({"api_key_env": "NOT_SET_ANYWHERE"}, r"api_key_env: environment variable NOT_SET_AN"),
        ({"upstream_model": ""}, r"upstreams\[0\]\.upstream_model: expected a model name"),
        ({"dns": "x.svc:9000"}, r"upstreams\[0\]\.url: unknown key"),  # one or the other
    ],
)
def test_a_bad_upstream_names_its_key(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(remote(**fields))


def test_no_replicas_and_no_upstreams_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"replicas: expected a positive integer"):
        parse({"name": "m", "engine": "standin", "replicas": 0})


def test_with_a_path_and_upstreams_a_local_replica_is_the_default(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    (model,) = parse({**remote(), "path": str(gguf)}).models
    assert model.replicas == 1


def test_a_reload_replaces_remote_replicas_only_when_they_change() -> None:
    old = parse({**remote(), "engine": "standin", "replicas": 1})
    same_remotes = dataclasses.replace(old.models[0], max_queue=3)
    (change,) = plan_reload(old, dataclasses.replace(old, models=(same_remotes,))).change
    assert not change.upstreams and not change.roll
    new = parse({**remote(url="http://10.0.0.6:9000/v1"), "engine": "standin", "replicas": 1})
    (change,) = plan_reload(old, new).change
    assert change.upstreams and not change.roll
    assert "upstreams changed: replacing the remote replicas" in change.describe()
    more_local = parse({**remote(), "engine": "standin", "replicas": 2})  # renumbers them
    assert plan_reload(old, more_local).change[0].upstreams


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dns": "workers.svc"}, r"upstreams\[0\]\.dns: expected NAME:PORT"),
        ({"dns": "workers.svc:0"}, r"upstreams\[0\]\.dns: expected NAME:PORT"),
        ({"dns": "w:9000", "path": "v1"}, r"upstreams\[0\]\.path: expected a URL path"),
        ({"dns": "w:9000", "resolve_every": 0}, r"upstreams\[0\]\.resolve_every: expected"),
    ],
)
def test_a_bad_dns_entry_names_its_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse({"name": "m", "upstreams": [entry]})


def test_a_dns_entry_makes_one_upstream_per_address(tmp_path: Path) -> None:
    entry = {"dns": "workers.svc:9000", "capacity": 2, "upstream_model": "q", "hosts_file": "hosts"}
    (model,) = parse_config(
        {"models": [{"name": "m", "upstreams": [entry]}]}, base_dir=tmp_path
    ).models
    (dns,) = model.upstreams
    assert isinstance(dns, DnsUpstream) and dns.hosts_file == tmp_path / "hosts"
    assert (dns.host, dns.port, dns.path, dns.resolve_every) == ("workers.svc", 9000, "/v1", 5.0)
    there = dns.at("10.1.2.3")
    assert (there.url, there.capacity, there.upstream_model) == ("http://10.1.2.3:9000/v1", 2, "q")
    assert dns.at("fd00::7").url == "http://[fd00::7]:9000/v1"
