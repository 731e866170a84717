"""Waiting out the kernel's timestamp granularity."""

from __future__ import annotations

import os
import time


def wait_past_ctime(path: str | os.PathLike[str]) -> None:
    """Return once a change made now gets a later ctime than ``path`` has:
    a probe file beside it (the same filesystem, the same clock) is created
    until its ctime is past ``path``'s. Before Linux 6.13 a ctime was the
    kernel's coarse per-tick time, and a rewrite within the same tick kept
    it; a filesystem may be coarser still."""
    before = os.stat(path).st_ctime_ns
    probe = os.path.join(os.path.dirname(os.fspath(path)), ".ketter-test-ctime-probe")
    deadline = time.monotonic() + 10
    while True:
        with open(probe, "wb"):
            pass
        moved = os.stat(probe).st_ctime_ns > before
        os.unlink(probe)
        if moved:
            return
        assert time.monotonic() < deadline, f"the ctime of {path} never moved on"
        time.sleep(0.005)
