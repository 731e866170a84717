"""A child process's lifeline to the process that started it, without
imports beyond the standard library: the workers' children
(:mod:`ketter.runtime.children`), the audit shipper and the engine's member
helper (:mod:`ketter.engine.member_helper_child`) all use it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """In a child (before its exec, or first thing after it): SIGKILL when
    ``parent`` (the thread that started it) dies, even by SIGKILL."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
