"""Waiting out the kernel's timestamp granularity."""

from __future__ import annotations

import os
import time


def wait_past_ctime(st: os.stat_result) -> None:
    """Return once the clock is past ``st``'s ctime by more than a kernel
    tick (10 ms): a change made after this moves the ctime on any kernel
    (before Linux 6.13 a ctime was a per-tick coarse time, and a rewrite
    within the same tick kept it)."""
    while time.time_ns() <= st.st_ctime_ns + 10_000_000:
        time.sleep(0.01)
