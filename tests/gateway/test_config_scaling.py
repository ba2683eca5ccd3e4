"""On-demand config: `replicas: {min, max}`, idle_ttl, scale_up_queue, `gpus: auto`, `memory`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.file import ConfigError, GatewayConfig, parse_config
from gateway.config.scaling import parse_size, show_size
from gateway.pool.plan import plan_reload


def parse(*models: dict[str, Any], **top: Any) -> GatewayConfig:
    return parse_config({"models": list(models), **top}, base_dir=Path.cwd())


def standin(**fields: Any) -> dict[str, Any]:
    return {"name": "m", "engine": "standin", **fields}


def test_a_plain_number_is_a_fixed_pool() -> None:
    (model,) = parse(standin(replicas=3)).models
    assert (model.floor, model.replicas, model.on_demand) == (3, 3, False)


def test_a_range_loads_on_demand_with_its_settings() -> None:
    (model,) = parse(
        standin(
            replicas={"min": 0, "max": 2},
            idle_ttl=600,
            scale_up_queue=2,
            gpus="auto",
            memory="1.5GiB",
        )
    ).models
    assert (model.floor, model.replicas, model.on_demand) == (0, 2, True)
    assert (model.idle_ttl, model.scale_up_queue, model.gpus_auto, model.gpus) == (
        600.0,
        2,
        True,
        None,
    )
    assert model.memory == 3 << 29


def test_memory_budgets_and_scaling_settings() -> None:
    config = parse(standin(), memory={"cpu": "16GiB", 0: "24GB"}, scaling={"min_residency": 2})
    assert dict(config.memory) == {"cpu": 16 << 30, "0": 24 * 10**9}
    assert config.scaling.min_residency == 2.0
    assert parse(standin()).scaling.min_residency is None  # auto: each replica's load time
    auto = parse(standin()).scaling
    assert (auto.keeps_spare(2), auto.keeps_spare(16)) == (False, True)  # auto: spare CPUs only
    assert parse(standin(), scaling={"spare_worker": True}).scaling.keeps_spare(2)


@pytest.mark.parametrize(
    ("model", "top", "message"),
    [
        (
            standin(replicas={"min": 3, "max": 2}),
            {},
            "replicas.max: expected an integer >= min (3)",
        ),
        (standin(replicas={"min": 0}), {}, "replicas.max: required with min"),
        (standin(replicas={"min": 0, "max": 0}), {}, "replicas.max: expected"),
        (standin(replicas={"min": -1, "max": 2}), {}, "replicas.min: expected an integer >= 0"),
        (standin(replicas={"low": 0, "max": 2}), {}, "replicas.low: unknown key"),
        (standin(replicas="two"), {}, "replicas: expected a positive integer or {min: N, max: M}"),
        (standin(idle_ttl=0), {}, "idle_ttl: expected seconds > 0"),
        (standin(scale_up_queue=0), {}, "scale_up_queue: expected a positive integer"),
        (standin(gpus="some"), {}, "gpus: expected auto, or a list of GPU ids"),
        (standin(memory="lots"), {}, "memory: expected a size like 512MiB"),
        (standin(), {"memory": {"gpu0": "1GiB"}}, "memory.gpu0: expected cpu or a GPU id"),
        (standin(), {"memory": {"cpu": "12 parsecs"}}, "memory.cpu: expected a size"),
        (standin(), {"scaling": {"min_residence": 1}}, "scaling.min_residence: unknown key"),
        (standin(), {"scaling": {"min_residency": -1}}, "min_residency: expected auto or seconds"),
        (standin(), {"scaling": {"spare_worker": "yes"}}, "spare_worker: expected auto, true or"),
    ],
)
def test_bad_values_name_their_key(
    model: dict[str, Any], top: dict[str, Any], message: str
) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("{", r"\{").replace("(", r"\(").replace(")", r"\)")
    ):
        parse(model, **top)


def test_sizes_read_and_shown() -> None:
    assert [parse_size(v, "x") for v in (1024, "512MiB", "2 GiB", "1.5GB", "10kb")] == [
        1024,
        512 << 20,
        2 << 30,
        1_500_000_000,
        10_000,
    ]
    assert (show_size(97.9 * (1 << 20)), show_size(1.5 * (1 << 30))) == ("97.9 MiB", "1.50 GiB")


def test_a_reload_that_moves_the_range_keeps_the_workers_and_gpus_auto_rolls_them() -> None:
    old = parse(standin(replicas={"min": 0, "max": 2}))
    (change,) = plan_reload(old, parse(standin(replicas={"min": 1, "max": 3}))).change
    assert not change.roll
    (change,) = plan_reload(old, parse(standin(replicas={"min": 0, "max": 2}, gpus="auto"))).change
    assert change.roll
