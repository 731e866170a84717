"""Keeping leases alive while bytes move, and noticing when they stop moving.

One :class:`LeaseKeeper` thread per workers process renews the lease of every
job the process runs, every ``lease.heartbeat`` seconds, but only while the
job's copy loop reports progress: a job with no progress for
``lease.stall_timeout`` (a hung NFS mount) is marked ``stalled`` (event and
alert) and its lease is left to expire, instead of being renewed forever.

A renewal that finds the claim gone (the sweep handed the job to another
worker after this process was paused) flags the job as lost; the copy loop
sees the flag at its next progress call and stops with
:class:`~ketter.errors.LostClaim`, touching nothing but its own temporaries.

The copy loop's progress calls also look for an operator's cancel
(:mod:`ketter.jobs.cancel`), at most every :data:`CANCEL_CHECK` seconds (one
read of the job's row): a cancelled copy stops with
:class:`~ketter.errors.JobCancelled` within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ketter.config import Config
from ketter.engine.context import TransferContext
from ketter.errors import JobCancelled, LostClaim, ShutdownRequested
from ketter.jobs.claim import renew
from ketter.runtime.faults import delay, fault
from ketter.runtime.signals import Shutdown
from ketter.store.guard import is_unwritable_error

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.lease")

#: Seconds between two looks for a cancel from a copy loop's progress calls.
CANCEL_CHECK = 0.5


@dataclass
class ActiveJob:
    """What the keeper knows of one running job (shared with its worker thread)."""

    job_id: int
    claim: str
    route: str
    attempt: int
    bytes_done: int = 0
    phase: str = "start"
    last_progress: float = field(default_factory=time.monotonic)
    lost: bool = False
    stalled: bool = False


class JobContext(TransferContext):
    """The engine's context for a job run by a worker: progress feeds the
    lease keeper; a stop request or a lost claim aborts at a safe point."""

    def __init__(
        self,
        active: ActiveJob,
        shutdown: Shutdown,
        on_warning: Callable[[str, dict], None] | None = None,
        on_progress: Callable[[ActiveJob], None] | None = None,
        *,
        store: JobStore,
    ) -> None:
        # The node in every temporary name: on shared storage an operator
        # (and a test) can tell which node wrote a leftover.
        super().__init__(str(active.job_id), active.claim, node=store.chain.node)
        self.store = store
        self.active = active
        self.shutdown = shutdown
        self._on_warning = on_warning
        self._on_progress = on_progress
        self._cancel_checked = time.monotonic()

    def progress(self, bytes_done: int, phase: str) -> None:
        active = self.active
        if bytes_done != active.bytes_done or phase != active.phase:
            active.last_progress = time.monotonic()
        active.bytes_done = bytes_done
        active.phase = phase
        if self._on_progress is not None:
            self._on_progress(active)
        delay(f"{phase}-progress")
        if active.lost:
            raise LostClaim(f"job {active.job_id}: the claim was taken over; stopping")
        guard = self.store.guard
        if guard is not None and guard.lost:
            # Set by the workers loop's periodic check: stop the copy now.
            self.store.ensure_intact(f"job {active.job_id}")
        if self.shutdown.requested:
            raise ShutdownRequested()
        self._look_for_cancel()

    def _look_for_cancel(self) -> None:
        """Raise :class:`JobCancelled` when an operator cancelled the job.
        Only ever true before the placement: a cancel is refused once the job
        is in ``verifying``, and a job asked to cancel cannot step into it."""
        mono = time.monotonic()
        if mono - self._cancel_checked < CANCEL_CHECK:
            return
        self._cancel_checked = mono
        if self.store.cancel_requested(self.active.job_id):
            raise JobCancelled(
                f"job {self.active.job_id} was cancelled by an operator while "
                f"{self.active.phase} ({self.active.bytes_done} bytes done)"
            )

    def before_irreversible(self, what: str) -> None:
        # A deleted or replaced job store would never learn of the step.
        self.store.ensure_intact(f"job {self.active.job_id}: {what}")

    def fault(self, point: str) -> None:
        fault(point, store=self.store)

    def warn(self, event: str, **details: object) -> None:
        super().warn(event, **details)
        if self._on_warning is not None:
            self._on_warning(event, dict(details))


class LeaseKeeper(threading.Thread):
    """Renews the leases of this process's running jobs (see module doc)."""

    def __init__(
        self,
        config: Config,
        shutdown: Shutdown,
        on_stalled: Callable[[ActiveJob], None] | None = None,
        *,
        store: JobStore,
    ) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.store = store
        self.config = config
        self.shutdown = shutdown
        self.on_stalled = on_stalled
        self._jobs: dict[int, ActiveJob] = {}
        self._lock = threading.Lock()
        self._stop_keeper = threading.Event()

    def add(self, active: ActiveJob) -> None:
        with self._lock:
            self._jobs[active.job_id] = active

    def remove(self, active: ActiveJob) -> None:
        """Stop renewing ``active``; a newer claim of the same job by another
        thread of the process (a batch's member let go, retried and claimed
        again while the batch went on) keeps its own entry."""
        with self._lock:
            if self._jobs.get(active.job_id) is active:
                del self._jobs[active.job_id]

    def running(self) -> list[ActiveJob]:
        with self._lock:
            return list(self._jobs.values())

    def stop(self) -> None:
        self._stop_keeper.set()

    def run(self) -> None:
        interval = self.config.lease.heartbeat
        while not self._stop_keeper.wait(interval):
            try:
                self.renew_all(now=time.time(), mono=time.monotonic())
            except Exception as exc:  # keep renewing; a DB hiccup must not kill the thread
                guard = self.store.guard
                lost = guard is not None and guard.check_identity() is not None
                if not lost and not is_unwritable_error(exc):  # the workers loop reports those
                    log.exception("lease renewal failed")
        self.store.release_thread()

    def renew_all(self, *, now: float, mono: float) -> None:
        """One renewal round (also called directly by tests with a fake clock)."""
        lease = self.config.lease
        for active in self.running():
            if active.lost:
                continue
            if mono - active.last_progress > lease.stall_timeout:
                if not active.stalled:
                    active.stalled = True
                    self._record_stall(active, now, mono - active.last_progress)
                continue
            if active.stalled:  # progress came back
                active.stalled = False
            ok = renew(
                self.store,
                active.job_id,
                active.claim,
                now=now,
                ttl=lease.ttl,
                bytes_done=active.bytes_done,
                progress_at=now,
            )
            if not ok:
                active.lost = True
                log.warning("lease lost", extra={"ketter.job_id": active.job_id})

    def _record_stall(self, active: ActiveJob, now: float, idle: float) -> None:
        with self.store.transaction():
            self.store.append_event(
                "stalled",
                now=now,
                job_id=active.job_id,
                route=active.route,
                attempt=active.attempt,
                details={
                    "idle_s": round(idle, 1),
                    "phase": active.phase,
                    "bytes_done": active.bytes_done,
                },
            )
        log.warning(
            "job stalled: no progress",
            extra={"ketter.job_id": active.job_id, "ketter.route": active.route},
        )
        if self.on_stalled is not None:
            self.on_stalled(active)
