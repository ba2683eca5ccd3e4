"""What a reload changes, decided without I/O from the old and new configs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway.config.file import (
    AuthConfig,
    GatewayConfig,
    HealthConfig,
    KeyConfig,
    ModelConfig,
    RedisConfig,
    ServerConfig,
)
from gateway.pool.plan import plan_reload

A = ModelConfig(name="a", path=Path("/m/a.gguf"), replicas=2)
B = ModelConfig(name="b", path=Path("/m/b.gguf"))


def config(*models: ModelConfig, **kw: object) -> GatewayConfig:
    return GatewayConfig(server=ServerConfig(), models=models, **kw)  # type: ignore[arg-type]


def test_the_same_config_changes_nothing() -> None:
    plan = plan_reload(config(A, B), config(A, B))
    assert plan.empty and plan.describe() == ["no changes"]


def test_a_new_model_is_added_and_a_missing_one_removed() -> None:
    plan = plan_reload(config(A), config(B))
    assert [m.name for m in plan.add] == ["b"] and plan.remove == ("a",)


def test_new_llama_params_roll_the_replicas() -> None:
    (change,) = plan_reload(config(A), config(replace(A, llama={"n_ctx": 512}))).change
    assert change.roll and change.old_replicas == 2


def test_a_new_path_or_gpus_roll_the_replicas() -> None:
    assert plan_reload(config(A), config(replace(A, path=Path("/m/c.gguf")))).change[0].roll
    assert plan_reload(config(A), config(replace(A, gpus=("0", "1")))).change[0].roll


def test_a_replica_count_change_scales_without_rolling() -> None:
    (change,) = plan_reload(config(A), config(replace(A, replicas=3))).change
    assert not change.roll and (change.old_replicas, change.model.replicas) == (2, 3)


def test_queue_and_alias_changes_apply_in_place() -> None:
    new = replace(A, max_queue=5, aliases=("gpt-4o",), queue_timeout=3.0)
    (change,) = plan_reload(config(A), config(new)).change
    assert not change.roll and change.model.replicas == change.old_replicas
    assert change.describe() == "changed a: queue/timeouts/aliases"


def test_a_new_port_is_reported_as_needing_a_restart() -> None:
    plan = plan_reload(config(A), GatewayConfig(server=ServerConfig(port=9000), models=(A,)))
    assert plan.needs_restart == ("port",)
    assert "server.port changed: takes effect after a restart" in plan.describe()


def test_health_and_watch_changes_are_settings_changes() -> None:
    assert plan_reload(config(A), config(A, health=HealthConfig(interval=9))).settings_changed
    assert plan_reload(config(A), config(A, watch=True)).settings_changed


def test_key_changes_are_named_and_applied_in_place() -> None:
    team = KeyConfig(name="team", digest=b"1" * 32)
    other = KeyConfig(name="other", digest=b"2" * 32)
    old = config(A, auth=AuthConfig(keys=(team, other)))
    new = config(A, auth=AuthConfig(keys=(replace(team, rpm=10), KeyConfig("new", b"3" * 32))))
    plan = plan_reload(old, new)
    assert plan.keys == ("key new added", "key other removed", "key team changed")
    assert plan.settings_changed and not plan.change and not plan.redis_changed


def test_a_new_redis_needs_a_restart() -> None:
    plan = plan_reload(config(A), config(A, redis=RedisConfig(url="redis://127.0.0.1:6379/0")))
    assert plan.redis_changed and "redis changed: takes effect after a restart" in plan.describe()


def test_a_changed_embedding_policy_rolls_the_replicas() -> None:
    (change,) = plan_reload(config(A), config(replace(A, matryoshka=True))).change
    assert change.roll


def test_new_llama_server_args_or_binary_roll_its_replicas() -> None:
    server = replace(A, engine="llama-server", server_binary=Path("/opt/llama-server"))
    with_args = replace(server, server_args=("--jinja",))
    assert plan_reload(config(server), config(with_args)).change[0].roll
    rebuilt = replace(server, server_binary=Path("/usr/local/bin/llama-server"))
    assert plan_reload(config(server), config(rebuilt)).change[0].roll
