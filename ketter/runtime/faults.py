"""Fault injection for crash tests: ``KETTER_FAULT=<point>`` makes the process
SIGKILL itself when it reaches that point (no cleanup, no atexit: exactly
what kill -9 or a power cut does to the process)."""

from __future__ import annotations

import os
import signal

#: Points outside the engine (the engine's are in ketter.engine.context).
POINTS = frozenset({"after-commit-before-enqueue", "after-dequeue", "after-claim"})


def fault(point: str) -> None:
    if os.environ.get("KETTER_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
