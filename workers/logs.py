"""One line per event on stderr, prefixed `[worker MODEL#REPLICA PID]` so interleaved logs stay
readable; or, when the gateway logs JSON (LLM_GATEWAY_LOG_FORMAT=json, inherited), one JSON object
a line with the same fields as the gateway's records plus `model`, `replica` and `pid`."""

from __future__ import annotations

import json
import os
import sys
import time

__all__ = ["FORMAT_ENV", "log", "set_log_name", "timestamp"]

FORMAT_ENV = "LLM_GATEWAY_LOG_FORMAT"
_name, _replica = "?", 0


def set_log_name(name: str, replica: int) -> None:
    global _name, _replica
    _name, _replica = name, replica


def log(message: str) -> None:
    # One write per line (print() writes the newline separately): workers share the
    # gateway's stderr, and a single short write is not split by another process's.
    sys.stderr.write(_line(message) + "\n")
    sys.stderr.flush()


def _line(message: str) -> str:
    if os.environ.get(FORMAT_ENV) != "json":
        return f"[worker {_name}#{_replica} {os.getpid()}] {message}"
    line = {
        "time": timestamp(time.time()),
        "level": "info",
        "logger": "worker",
        "message": message,
        "model": _name,
        "replica": _replica,
        "pid": os.getpid(),
    }
    return json.dumps(line)


def timestamp(seconds: float) -> str:
    """UTC, ISO 8601, to the millisecond: the `time` of every JSON log line, gateway's too."""
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int(seconds % 1 * 1000):03d}Z"
    )
