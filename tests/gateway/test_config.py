"""config.yaml parsing: valid files become frozen dataclasses; each bad key is named."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from llama_cpp import Llama

from gateway.config.file import (
    LLAMA_PARAMS,
    STANDIN_PARAMS,
    WORKER_LLAMA_PARAMS,
    ConfigError,
    OutlierConfig,
    load_config,
    parse_config,
)
from workers.engines.standin import StandinOptions


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return path


def model(**overrides: Any) -> dict[str, Any]:
    return {"name": "m", "path": "tiny.gguf", **overrides}


def parse(tmp_path: Path, models: list[dict[str, Any]], **top: Any) -> Any:
    return parse_config({"models": models, **top}, base_dir=tmp_path)


def test_minimal_model_gets_documented_defaults(tmp_path: Path, gguf: Path) -> None:
    config = parse(tmp_path, [model()])
    m = config.models[0]
    assert (m.replicas, m.max_queue, m.queue_timeout, m.engine) == (1, 64, 30.0, "llama")
    # A stream nobody reads frees its slot within interactive patience, not a minute.
    assert m.idle_timeout == 15.0
    assert m.path == gguf
    assert config.server.port == 8000


def test_relative_path_is_resolved_against_the_config_folder(tmp_path: Path, gguf: Path) -> None:
    (tmp_path / "config.yaml").write_text("models:\n  - {name: m, path: tiny.gguf}\n")
    assert load_config(tmp_path / "config.yaml").models[0].path == gguf


def test_env_vars_in_path_are_expanded(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    assert parse(tmp_path, [model(path="${MODEL_DIR}/tiny.gguf")]).models[0].path == gguf


def test_aliases_map_to_the_same_model(tmp_path: Path, gguf: Path) -> None:
    config = parse(tmp_path, [model(aliases=["a", "b"])])
    names = config.model_by_name()
    assert names["a"] is names["b"] is names["m"]


def test_gpus_give_each_replica_its_devices(tmp_path: Path, gguf: Path) -> None:
    config = parse(tmp_path, [model(replicas=2, gpus=[0, "1, 2"])])
    assert [config.models[0].device(i) for i in range(2)] == ["0", "1,2"]


def test_outlier_ejection_and_the_upstream_cap_have_envoy_like_defaults(
    tmp_path: Path, gguf: Path
) -> None:
    outlier = {
        "consecutive_errors": 3,
        "base_ejection_time": 10,
        "max_ejection_time": 60,
        "max_ejection_percent": 100,
    }
    config = parse(
        tmp_path, [model(), model(name="n", outlier=outlier)], server={"max_upstream_bytes": 1024}
    )
    assert config.models[0].outlier == OutlierConfig(5, 30.0, 300.0, 50)
    assert config.models[1].outlier == OutlierConfig(3, 10.0, 60.0, 100)
    assert config.server.max_upstream_bytes == 1024
    assert parse(tmp_path, [model()]).server.max_upstream_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("models", "top", "named"),
    [
        (
            [model(outlier={"consecutive_errors": 0})],
            {},
            "models[0] (m).outlier.consecutive_errors: expected a positive integer",
        ),
        (
            [model(outlier={"max_ejection_percent": 101})],
            {},
            "models[0] (m).outlier.max_ejection_percent: expected an integer from 0 to 100",
        ),
        (
            [model(outlier={"base_ejection_time": 60, "max_ejection_time": 30})],
            {},
            "models[0] (m).outlier.max_ejection_time: expected seconds >= base_ejection_time",
        ),
        (
            [model(outlier={"base_ejection_time": 0})],
            {},
            "models[0] (m).outlier.base_ejection_time: expected seconds > 0",
        ),
        ([model(outlier={"interval": 10})], {}, "models[0] (m).outlier.interval: unknown key"),
        ([model(outlier=5)], {}, "models[0] (m).outlier: expected a mapping"),
        (
            [model()],
            {"server": {"max_upstream_bytes": 0}},
            "server.max_upstream_bytes: expected a positive integer",
        ),
    ],
)
def test_a_bad_outlier_or_upstream_cap_setting_is_named(
    tmp_path: Path, gguf: Path, models: list[dict[str, Any]], top: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, models, **top)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("models", "top", "named"),
    [
        ([model(replica=2)], {}, "models[0] (m).replica: unknown key"),
        ([model(path="missing.gguf")], {}, "models[0] (m).path: model file not found"),
        ([model(), model()], {}, "name or alias 'm' is already used by models[0]"),
        ([model(), model(name="n", aliases=["m"])], {}, "models[1] (n): name or alias 'm'"),
        ([model(replicas=0)], {}, "models[0] (m).replicas: expected a positive integer"),
        ([model(replicas="2")], {}, "models[0] (m).replicas"),
        ([model(queue_timeout=-1)], {}, "models[0] (m).queue_timeout"),
        ([model(llama={"n_ctx": "big"})], {}, "models[0] (m).llama.n_ctx: expected a positive"),
        ([model(llama={"n_ctxx": 512})], {}, "models[0] (m).llama.n_ctxx: unknown key"),
        ([model(replicas=2, gpus=[0])], {}, "models[0] (m).gpus: has 1 entries but replicas is 2"),
        ([model(gpus=["x"])], {}, "models[0] (m).gpus: expected auto, or a list of GPU ids"),
        ([model(path="${NOT_SET_ANYWHERE}/a.gguf")], {}, "NOT_SET_ANYWHERE is not set"),
        ([model(engine="vllm")], {}, "(m).engine: expected llama, llama-server or standin"),
        (
            [model(capacity=2, llama={"embedding": True})],
            {},
            "models[0] (m).capacity: an embedding model serves one",
        ),
        ([{"path": "tiny.gguf"}], {}, "models[0].name: expected a non-empty string"),
        ([], {}, "models: expected a non-empty list"),
        ([model()], {"server": {"port": 70000}}, "server.port: expected a port number"),
        ([model()], {"server": {"hots": "x"}}, "server.hots: unknown key"),
        ([model()], {"modles": []}, "modles: unknown key"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, gguf: Path, models: list[dict[str, Any]], top: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse(tmp_path, models, **top)
    assert named in str(caught.value)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "config.yaml")


def test_a_yaml_error_names_the_line_but_never_echoes_the_file(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    (tmp_path / "config.yaml").write_text(
        f'server:\n  key: ["{secret}"]\n  port: 8000\n    host: x\nmodels: [\n'
    )
    with pytest.raises(ConfigError, match=r"not valid YAML: .* at line 4") as caught:
        load_config(tmp_path / "config.yaml")
    assert secret not in str(caught.value) and "sk-live" not in str(caught.value)


@pytest.mark.parametrize("section", ["server", "llama"])
def test_a_secret_pasted_as_a_key_is_never_echoed(tmp_path: Path, gguf: Path, section: str) -> None:
    secret = "sk-live-0123456789abcdef"
    where = {"server": {secret: 1}} if section == "server" else {}
    models = [model(llama={secret: 1})] if section == "llama" else [model()]
    with pytest.raises(ConfigError, match="unknown key") as caught:
        parse(tmp_path, models, **where)
    assert secret not in str(caught.value) and "a string of 24 characters" in str(caught.value)


def test_a_bad_value_is_described_never_echoed(tmp_path: Path, gguf: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, [model()], server={"port": "sk-live-0123456789abcdef"})
    assert "server.port" in str(caught.value) and "sk-live" not in str(caught.value)
    assert "a string of 24 characters" in str(caught.value)
    with pytest.raises(ConfigError, match="got 70000"):
        parse(tmp_path, [model()], server={"port": 70000})


def test_the_old_flat_key_list_says_how_to_move_it(tmp_path: Path, gguf: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.api_keys: replaced by auth\.keys.*keygen"):
        parse(tmp_path, [model()], server={"api_keys": ["sk-0123456789abcdef"]})


def test_standin_models_need_no_file(tmp_path: Path) -> None:
    config = parse(tmp_path, [{"name": "s", "engine": "standin", "standin": {"tokens": 4}}])
    assert config.models[0].path is None
    assert config.models[0].standin["tokens"] == 4


def test_every_llama_key_is_a_llama_cpp_argument() -> None:
    accepted = set(inspect.signature(Llama.__init__).parameters) | WORKER_LLAMA_PARAMS
    assert set(LLAMA_PARAMS) <= accepted, set(LLAMA_PARAMS) - accepted
    assert not WORKER_LLAMA_PARAMS & set(inspect.signature(Llama.__init__).parameters)


def test_the_standin_keys_are_the_standin_options() -> None:
    assert set(STANDIN_PARAMS) == set(StandinOptions.__dataclass_fields__)


def test_who_may_address_the_gateway_is_off_by_default(tmp_path: Path, gguf: Path) -> None:
    server = parse(tmp_path, [model()]).server
    assert (server.allowed_hosts, server.cors, server.forwarded_allow_ips) == ((), (), ())
    assert server.max_connections_per_client == 1024  # generous: local clients share 127.0.0.1


def test_hosts_origins_and_proxies_are_read_as_browsers_send_them(
    tmp_path: Path, gguf: Path
) -> None:
    server = parse(
        tmp_path,
        [model()],
        server={
            "allowed_hosts": ["Gateway.Internal", "[::1]", "*"],
            "cors": ["https://App.example.com/", "http://127.0.0.1:5173", "*"],
            "forwarded_allow_ips": ["10.0.0.0/8", "127.0.0.1", "::1", "*"],
            "max_connections_per_client": 64,
        },
    ).server
    assert server.allowed_hosts == ("gateway.internal", "[::1]", "*")
    assert server.cors == ("https://app.example.com", "http://127.0.0.1:5173", "*")
    assert server.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1", "::1", "*")
    assert server.max_connections_per_client == 64


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("allowed_hosts", ["gw.example:8000"], "allowed_hosts[0]"),
        ("allowed_hosts", "gw.example", "allowed_hosts"),
        ("cors", ["https://app.example/path"], "cors[0]"),
        ("cors", ["app.example"], "cors[0]"),
        ("cors", [""], "cors"),
        ("forwarded_allow_ips", ["proxy.internal"], "forwarded_allow_ips[0]"),
        ("forwarded_allow_ips", [1], "forwarded_allow_ips"),
        ("max_connections_per_client", 0, "max_connections_per_client"),
    ],
)
def test_a_bad_host_origin_or_proxy_names_its_key(
    tmp_path: Path, gguf: Path, key: str, value: Any, where: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^server\.{re.escape(where)}: expected"):
        parse(tmp_path, [model()], server={key: value})


def test_a_keyless_gateway_on_a_public_address_needs_allowed_hosts(
    tmp_path: Path, gguf: Path
) -> None:
    public = {"host": "0.0.0.0"}
    with pytest.raises(ConfigError, match=r"^server\.allowed_hosts: .*0\.0\.0\.0 with no API keys"):
        parse(tmp_path, [model()], server=public, auth={"required": False})
    config = parse(
        tmp_path, [model()], server={**public, "allowed_hosts": ["*"]}, auth={"required": False}
    )
    assert config.server.allowed_hosts == ("*",)
    assert parse(tmp_path, [model()], server={"host": "127.0.0.2"}, auth={"required": False})


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def server_model(**overrides: Any) -> dict[str, Any]:
    return model(**{"engine": "llama-server", **overrides})


def test_a_llama_server_model_runs_the_configured_binary_with_its_own_args(
    tmp_path: Path, gguf: Path
) -> None:
    binary = _executable(tmp_path / "my-llama-server")
    config = parse(
        tmp_path,
        [
            server_model(server_args=["--jinja", "-lv", "4"]),
            server_model(name="e", llama={"embedding": True}),
        ],
        llama_server={"binary": "my-llama-server"},
    )
    chat, embed = config.models
    assert config.llama_server.binary == binary
    assert chat.server_binary == binary and chat.server_args == ("--jinja", "-lv", "4")
    assert chat.capacity == 4
    assert "llama-server" in chat.unserved["/v1/embeddings"] and not embed.unserved
    assert embed.capacity == 1 and not chat.uses_worker and chat.loads_gguf


def test_the_llama_server_binary_is_looked_up_on_path_then_where_make_builds_it(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.config.llama_server as llama_server

    (tmp_path / "bin").mkdir()
    on_path = _executable(tmp_path / "bin" / "llama-server")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert parse(tmp_path, [server_model()]).models[0].server_binary == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    built = _executable(tmp_path / "built-llama-server")
    monkeypatch.setattr(llama_server, "BUILT_BINARY", built)
    assert parse(tmp_path, [server_model()]).models[0].server_binary == built
    monkeypatch.setattr(llama_server, "BUILT_BINARY", tmp_path / "never-built")
    missing = r"models\[0\] \(m\)\.engine: llama-server needs llama\.cpp's llama-server: set "
    with pytest.raises(ConfigError, match=missing + r".*run `make llama-server`"):
        parse(tmp_path, [server_model()])
    # A model served by upstreams alone starts no llama-server: none is needed.
    remote = {"name": "r", "engine": "llama-server", "upstreams": [{"url": "http://h:1/v1"}]}
    assert parse(tmp_path, [remote]).models[0].server_binary is None


@pytest.mark.parametrize(
    ("entry", "top", "message"),
    [
        ({}, {"llama_server": {"binary": "absent"}}, r"llama_server\.binary: no executable file"),
        ({}, {"llama_server": {"bin": "x"}}, r"llama_server\.bin: unknown key"),
        ({"server_args": "--jinja"}, {}, r"\.server_args: expected a list of strings"),
        ({"server_args": ["-c", 4096]}, {}, r"\.server_args: expected a list of strings"),
        ({"engine": "llama", "server_args": ["-v"]}, {}, r"server_args: only for engine: llama-s"),
        ({"llama": {"logits_all": True}}, {}, r"llama\.logits_all: llama-server has no equival"),
        ({"llama": {"chat_format": "chatml"}}, {}, r"llama\.chat_format: .*--chat-template"),
        ({"llama": {"type_k": 12}}, {}, r"llama\.type_k: llama-server cannot take 12"),
        ({"llama": {"split_mode": 7}}, {}, r"llama\.split_mode: llama-server cannot take 7"),
        ({"matryoshka": True}, {}, r"\.matryoshka: our worker's option; llama-server has none"),
    ],
)
def test_a_bad_llama_server_setting_is_named(
    tmp_path: Path, gguf: Path, entry: dict[str, Any], top: dict[str, Any], message: str
) -> None:
    _executable(tmp_path / "llama-server")
    top = top or {"llama_server": {"binary": "llama-server"}}
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, [server_model(**entry)], **top)
