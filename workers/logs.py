"""One line per event on stderr, prefixed `[worker NAME PID]` so interleaved logs stay readable."""

from __future__ import annotations

import os
import sys

__all__ = ["log", "set_log_name"]

_prefix = f"[worker ? {os.getpid()}]"


def set_log_name(name: str) -> None:
    global _prefix
    _prefix = f"[worker {name} {os.getpid()}]"


def log(message: str) -> None:
    # One write per line (print() writes the newline separately): workers share the
    # gateway's stderr, and a single short write is not split by another process's.
    sys.stderr.write(f"{_prefix} {message}\n")
    sys.stderr.flush()
