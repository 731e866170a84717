"""Progress reporting for long copies and reads: throttled calls to
``ctx.progress``, and a checkpoint call every ``step`` bytes so a healthy
job never looks stalled to the lease keeper."""

from __future__ import annotations

import time
from collections.abc import Callable

from .context import TransferContext

#: Default progress step for long reads (the default ``checkpoint_bytes``).
DEFAULT_STEP = 64 * 1024 * 1024


class Progress:
    """Throttles ``ctx.progress``: at most ~10 calls/s, at least once a second.

    ``step`` is the checkpoint size: long reads (hashing, re-reading from
    disk) report through :meth:`reads`, which makes a checkpoint call every
    ``step`` bytes, so a healthy job never looks stalled to the lease keeper.
    Only call it from the thread that runs the engine step (the job context
    talks to the job store); reader threads publish counters instead.
    """

    def __init__(self, ctx: TransferContext, base: int = 0, *, step: int = DEFAULT_STEP) -> None:
        self.ctx = ctx
        self.base = base
        self.step = step
        self.last = 0.0

    def __call__(self, done: int, phase: str, *, checkpoint: bool = False) -> None:
        now = time.monotonic()
        gap = now - self.last
        if (checkpoint and gap >= self.ctx.progress_interval) or gap >= 1.0:
            self.last = now
            self.ctx.progress(self.base + done, phase)

    def reads(self, phase: str, start: int = 0) -> ReadProgress:
        """A ``report(done)`` callback for one long read loop."""
        return ReadProgress(self, phase, start)


class ReadProgress:
    """Reports a long read: a checkpoint call each ``progress.step`` bytes,
    otherwise the time-based call (at least once a second)."""

    def __init__(self, progress: Progress, phase: str, start: int = 0) -> None:
        self.progress = progress
        self.phase = phase
        self.mark = start

    def __call__(self, done: int) -> None:
        if done - self.mark >= self.progress.step:
            self.mark = done
            self.progress(done, self.phase, checkpoint=True)
        else:
            self.progress(done, self.phase)


def shifted(report: Callable[[int], None] | None, base: int) -> Callable[[int], None] | None:
    """``report`` for one member of a folder: adds the bytes done before it."""
    if report is None:
        return None
    r = report
    return lambda n: r(base + n)


def progress_for(ctx: TransferContext | None, step: int = DEFAULT_STEP) -> Progress | None:
    """A :class:`Progress` for ``ctx``, or None when the caller passed none."""
    return Progress(ctx, step=step) if ctx is not None else None
