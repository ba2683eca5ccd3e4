"""Die with the parent: a worker must never outlive the gateway that spawned it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["tie_to_parent"]

_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5


def _set_pdeathsig() -> None:
    """Ask Linux to SIGKILL us when the parent dies (strictly: when the spawning thread exits)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _watch(parent_pid: int) -> None:
    # Covers macOS and PDEATHSIG's thread-exit caveat: re-parenting changes getppid().
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    os._exit(1)


def tie_to_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        _set_pdeathsig()
    # The parent may have died before prctl took effect: then we were already re-parented.
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="lifeline", daemon=True).start()
