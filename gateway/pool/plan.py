"""What a reload changes: a pure diff of the running config and the new one."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.file import AuthConfig, GatewayConfig, ModelConfig

__all__ = ["ModelChange", "ReloadPlan", "plan_reload"]

# What a worker process is started with: changing any of these replaces its replicas.
_WORKER_FIELDS = (
    "path",
    "engine",
    "llama",
    "standin",
    "gpus",
    "gpus_auto",
    "capacity",
    "matryoshka",
    "accept_token_ids",
    "server_args",
    "server_binary",
)
# What only a new process can apply: the listening socket, the metrics middleware.
_RESTART_FIELDS = ("host", "port", "metrics")


@dataclass(frozen=True)
class ModelChange:
    """A model in both configs whose entry differs."""

    model: ModelConfig  # the new entry
    old_replicas: int
    roll: bool  # worker settings changed: replace the running replicas one at a time
    upstreams: bool = False  # its upstreams (or their numbering after the local slots) changed

    def describe(self) -> str:
        parts = ["worker settings changed: rolling replicas"] if self.roll else []
        parts += ["upstreams changed: replacing the remote replicas"] if self.upstreams else []
        if self.model.replicas != self.old_replicas:
            parts.append(f"replicas {self.old_replicas} -> {self.model.replicas}")
        return f"changed {self.model.name}: " + ("; ".join(parts) or "queue/timeouts/aliases")


@dataclass(frozen=True)
class ReloadPlan:
    add: tuple[ModelConfig, ...] = ()
    remove: tuple[str, ...] = ()
    change: tuple[ModelChange, ...] = ()
    needs_restart: tuple[str, ...] = ()  # server keys that only a restart applies
    settings_changed: bool = False  # server, health or auth settings, applied in place
    keys: tuple[str, ...] = ()  # what changed in auth.keys, by key name
    redis_changed: bool = False  # the limits' store: only a restart moves it

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.change or self.settings_changed)

    def describe(self) -> list[str]:
        lines = [f"added {m.name} ({m.replicas} replicas)" for m in self.add]
        lines += [f"removed {name}: draining, then stopping" for name in self.remove]
        lines += [change.describe() for change in self.change]
        lines += [
            f"server.{key} changed: takes effect after a restart" for key in self.needs_restart
        ]
        lines += self.keys
        if self.redis_changed:
            lines.append("redis changed: takes effect after a restart")
        if self.settings_changed:
            lines.append("server, health, watch or auth settings updated")
        return lines or ["no changes"]


def plan_reload(old: GatewayConfig, new: GatewayConfig) -> ReloadPlan:
    """The steps that turn a gateway running `old` into one running `new`."""
    old_models = {m.name: m for m in old.models}
    new_models = {m.name: m for m in new.models}
    return ReloadPlan(
        add=tuple(m for name, m in new_models.items() if name not in old_models),
        remove=tuple(name for name in old_models if name not in new_models),
        change=tuple(
            _change(old_models[name], m)
            for name, m in new_models.items()
            if name in old_models and old_models[name] != m
        ),
        needs_restart=tuple(
            key for key in _RESTART_FIELDS if getattr(old.server, key) != getattr(new.server, key)
        ),
        settings_changed=_settings(old) != _settings(new),
        keys=_key_changes(old.auth, new.auth),
        redis_changed=old.redis != new.redis,
    )


def _settings(config: GatewayConfig) -> tuple[object, ...]:
    return config.server, config.health, config.watch, config.auth


def _key_changes(old: AuthConfig, new: AuthConfig) -> tuple[str, ...]:
    """Keys added, removed or changed (their models, limits, weight, role or key), by name."""
    before = {key.name: key for key in old.keys}
    after = {key.name: key for key in new.keys}
    return (
        *(f"key {name} added" for name in after if name not in before),
        *(f"key {name} removed" for name in before if name not in after),
        *(
            f"key {name} changed"
            for name, key in after.items()
            if name in before and before[name] != key
        ),
    )


def _change(old: ModelConfig, new: ModelConfig) -> ModelChange:
    roll = any(getattr(old, key) != getattr(new, key) for key in _WORKER_FIELDS)
    # Remote replicas are numbered after the local slots: a new count renumbers them.
    moved = (old.upstreams, old.replicas) != (new.upstreams, new.replicas)
    upstreams = moved and bool(old.upstreams or new.upstreams)
    return ModelChange(model=new, old_replicas=old.replicas, roll=roll, upstreams=upstreams)
