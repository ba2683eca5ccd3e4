"""The supervisor alone, in-process, over real stand-in worker processes."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import gateway.replicas.local_driver
from gateway.config.file import ModelConfig, parse_config
from gateway.replicas.launch import Launch, Spare
from gateway.replicas.registry import Registry, ReplicaState
from gateway.replicas.supervisor import Supervisor
from tests.support import standin


async def until(predicate: Callable[[], object], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_failed_spawn_is_logged_shown_and_retried_with_backoff(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_spawn = gateway.replicas.local_driver.spawn
    attempts = 0

    async def spawn_once_out_of_fds(
        model: ModelConfig, index: int, device: str, spare: Spare | None
    ) -> Launch:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return await real_spawn(model, index, device, spare)

    monkeypatch.setattr(gateway.replicas.local_driver, "spawn", spawn_once_out_of_fds)
    config = parse_config({"models": [standin("m")]}, base_dir=Path.cwd())
    registry = Registry()
    supervisor = Supervisor(config, registry)
    await supervisor.start()
    try:
        (replica,) = registry.replicas("m")
        await until(lambda: replica.error, 5)
        assert replica.state is ReplicaState.FAILED and "Too many open files" in replica.error
        assert not registry.model_status("m")["ready"]
        assert replica.error in registry.model_status("m")["errors"]
        await until(lambda: replica.state is ReplicaState.READY, 15)  # after the backoff
    finally:
        await supervisor.stop()
    assert attempts == 2
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures and "could not start a worker" in failures[0].getMessage()
