"""Subprocesses of the tests that end with the test process, however it ends."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for a server a test starts: the child is sent SIGTERM when the
    process that started it dies, even by SIGKILL, so a killed test run leaves no demo or
    control plane running (Linux; elsewhere it does nothing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
