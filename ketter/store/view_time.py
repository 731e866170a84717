"""The ``job_history`` view's times, formatted in Python and remembered.

``strftime('%Y-%m-%dT%H:%M:%fZ', ts, 'unixepoch')`` costs SQLite about
1.4 µs a value: half the time of a page of 50 jobs with six times each
(``docs/performance.md``, the HTTP API). The read model selects a job's six
raw times and formats them here. A job's times are a pure function's input
and most jobs are history that never changes, so the formatted six are
remembered by their raw values: a page asked for again (the newest jobs, a
dashboard polling) costs a dictionary lookup per job.
"""

from __future__ import annotations

import time

#: Raw times → the view's strings; emptied when it reaches this many jobs
#: (a few MiB at most).
REMEMBERED = 8192
_shown: dict[tuple[float | None, ...], tuple[str | None, ...]] = {}


def view_time(ts: float | None) -> str | None:
    """``ts`` as the view prints it: UTC, milliseconds rounded, ``Z``."""
    if ts is None:
        return None
    seconds, millis = divmod(int(ts * 1000 + 0.5), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def view_times(raw: tuple[float | None, ...]) -> tuple[str | None, ...]:
    """Each of ``raw`` through :func:`view_time`, remembered."""
    shown = _shown.get(raw)
    if shown is None:
        if len(_shown) >= REMEMBERED:
            _shown.clear()  # a dict's single operations hold under threads
        shown = _shown[raw] = tuple(view_time(ts) for ts in raw)
    return shown
