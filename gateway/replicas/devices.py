"""The devices replicas run on and each one's memory budget: from `memory:` in config.yaml, else
read from the machine (RAM for "cpu", nvidia-smi for each GPU)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping

from ..config.file import GatewayConfig

__all__ = ["budgets", "machine_gpus", "machine_ram"]

log = logging.getLogger("gateway.devices")


def budgets(config: GatewayConfig) -> dict[str, int]:
    """Bytes each device may hold: the configured budgets; where none is given for the CPU, the
    machine's RAM, and for GPUs (none configured), every GPU nvidia-smi lists, whole."""
    found = dict(config.memory)
    found.setdefault("cpu", machine_ram())
    if not any(device != "cpu" for device in found):
        found.update(machine_gpus())
    return found


def machine_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_gpus() -> Mapping[str, int]:
    """GPU id -> total memory, from nvidia-smi; none where it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return {}
    query = ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s): no GPU budgets; set memory: in config.yaml", exc)
        return {}
    return dict(_gpu_line(line) for line in out.splitlines() if line.strip())


def _gpu_line(line: str) -> tuple[str, int]:
    index, mib = (part.strip() for part in line.split(","))
    return index, int(mib) << 20
