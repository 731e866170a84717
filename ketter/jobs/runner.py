"""The worker's side of a job: claim it, run its steps, decide what an error means.

Error policy (docs/guarantees.md):

* :class:`RouteUnavailable` — the route is paused (one event and alert per
  outage); the job waits in ``retry_wait`` *without* using up an attempt.
* A transient error — ``retry_wait`` with an exponential backoff, after a
  rollback of anything half-done; out of attempts, ``failed``.
* A permanent error — ``rolling_back`` then ``failed`` with the error kept.
* :class:`SourceSuperseded` — the version detected no longer exists (the new
  one is a job of its own): ``rolling_back`` then ``superseded``, no alert.
* :class:`SourceInUse` after the placement — a move's source is still open
  for writing: retried later without using up an attempt.
* After the placement a job never rolls back: errors retry the remaining
  work, and running out of attempts fails it with the delivery kept.
* A stop request (SIGTERM) releases the job without using up an attempt; a
  lost claim stops the worker without touching anything but its own
  temporaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from ketter.config import Config
from ketter.engine.cleanup import rollback
from ketter.engine.copyfile import INLINE_MAX
from ketter.engine.oserrors import classify_oserror
from ketter.errors import (
    ChecksumMismatch,
    DestinationFull,
    KetterError,
    LostClaim,
    PermanentError,
    RouteUnavailable,
    ShutdownRequested,
    TransientError,
)
from ketter.jobs.backoff import compute_backoff
from ketter.jobs.batch import BATCH_MAX, Batch, batchable
from ketter.jobs.claim import Claimed, claim_job, claim_more, owner_name, release
from ketter.jobs.delivered import log_completed
from ketter.jobs.lease import ActiveJob, JobContext, LeaseKeeper
from ketter.jobs.routes import (
    pause_route,
    room_backoff,
    room_pauses_before,
    room_wait_reason,
    unavailable_reason,
)
from ketter.jobs.spec import spec_for
from ketter.jobs.states import State
from ketter.jobs.steps import Attempt
from ketter.jobs.transitions import transition
from ketter.paths import readable
from ketter.runtime.faults import fault
from ketter.runtime.signals import Shutdown
from ketter.store.guard import guard_of, is_unwritable_error
from ketter.store.models import Job, database

log = logging.getLogger("ketter.jobs")
S = State


class Notifier(Protocol):
    """Where alerts go (apprise in production; a list in tests)."""

    def notify(self, kind: str, route: str | None, message: str) -> None: ...


class LogNotifier:
    """Default notifier: a warning in the operational log."""

    def notify(self, kind: str, route: str | None, message: str) -> None:
        log.warning("alert: %s", message, extra={"alert.kind": kind, "ketter.route": route})


class JobRunner:
    """Runs claimed jobs for one workers process (thread-safe: no shared state
    but the lease keeper's registry)."""

    def __init__(
        self,
        config: Config,
        *,
        shutdown: Shutdown,
        keeper: LeaseKeeper,
        ring: Callable[[int, float], None] | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_progress: Callable[[ActiveJob], None] | None = None,
    ) -> None:
        self.config = config
        self.shutdown = shutdown
        self.keeper = keeper
        self._ring = ring
        self.notifier = notifier or LogNotifier()
        self.clock = clock
        self.rng = rng
        self.on_progress = on_progress

    # -- entry points --------------------------------------------------------

    def handle(self, hint: int | None) -> int | None:
        """The queue task: claim the hinted (or best due) job and run it.
        Returns the id of the job run, if any."""
        if self.shutdown.requested:
            return None  # the sweep re-rings after restart
        guard = guard_of(database.obj)
        if guard is not None and guard.problem:
            return None  # every route paused: store lost or not writable (sweep re-rings)
        fault("after-dequeue")
        claimed = claim_job(
            self.config, hint=hint, owner=owner_name(self.config.node), now=self.clock()
        )
        if claimed is None:
            return None
        fault("after-claim")
        mates = self._batch_mates(claimed)
        if mates:
            Batch(self, [claimed, *mates]).run()
        else:
            self.run(claimed)
        log_completed([claimed, *mates])  # the service log's delivery lines
        return claimed.job_id

    def _batch_mates(self, claimed: Claimed) -> list[Claimed]:
        """More fresh small files of the same route, when ``claimed`` is one
        (see :mod:`ketter.jobs.batch`)."""
        job = claimed.row
        try:
            route = self.config.route(job.route) if job is not None else None
        except KeyError:  # route removed from the config: run() reports it
            return []
        if job is None or route is None or not batchable(job, claimed, route):
            return []
        return claim_more(
            self.config,
            route,
            owner=owner_name(self.config.node),
            now=self.clock(),
            limit=BATCH_MAX - 1,
            max_size=INLINE_MAX,
            mode=job.mode,
        )

    def run(self, claimed: Claimed) -> None:
        job = claimed.row if claimed.row is not None else Job.get_by_id(claimed.job_id)
        active, ctx = self.start(job, claimed)
        attempt: Attempt | None = None
        try:
            attempt = self.attempt(job, claimed, ctx)
            attempt.drive()
        except BaseException as exc:
            self.stopped(job, claimed, attempt, exc)
        finally:
            self.keeper.remove(active)

    def start(self, job: Job, claimed: Claimed) -> tuple[ActiveJob, JobContext]:
        """The lease of a claimed job is kept alive from here on (until
        ``keeper.remove``)."""
        active = ActiveJob(job.id, claimed.claim, job.route, claimed.attempt)
        ctx = JobContext(active, self.shutdown, on_progress=self.on_progress)
        self.keeper.add(active)
        return active, ctx

    def attempt(self, job: Job, claimed: Claimed, ctx: JobContext) -> Attempt:
        route = self.config.route(job.route)
        # The job runs under the mode it was created with: a reload that turns a
        # copy route into a move route must not delete sources of copy jobs.
        spec = dataclasses.replace(
            spec_for(route, self.config), mode="move" if job.mode == "move" else "copy"
        )
        return Attempt(self, job, claimed, route, spec, ctx)

    def stopped(
        self, job: Job, claimed: Claimed, attempt: Attempt | None, exc: BaseException
    ) -> None:
        """What an exception out of a job's steps means (module docstring)."""
        if isinstance(exc, ShutdownRequested):
            kept = attempt.kept_bytes() if attempt is not None else None
            release(job.id, claimed.claim, now=self.clock(), reason="shutdown", bytes_done=kept)
            log.info("released on shutdown", extra={"ketter.job_id": job.id})
        elif isinstance(exc, LostClaim):
            # Another worker owns the job now: remove only our own temporaries.
            if attempt is not None:
                rollback(attempt.dest_dir, attempt.ctx.tag, root=attempt.spec.destination_root)
            log.warning("stopped: %s", exc, extra={"ketter.job_id": job.id})
        elif isinstance(exc, KetterError):
            # Before the store check: the engine raises ``classify_oserror(e)
            # from e``, and a destination's EPERM (chattr +i) or ENOSPC is the
            # job's error (error policy, a DestinationFull route pause), never
            # "state store not writable" (review of #14 findings 8 and 17).
            self._on_error(job.id, claimed, attempt, exc)
        elif is_unwritable_error(exc, state_dir=self.config.state_dir):
            # The job store cannot record anything now (disk full, read-only):
            # leave the job as a crash would; its lease runs out and the sweep
            # re-rings it once the store is writable. The workers loop pauses
            # every route and alerts (ketter.store.guard).
            guard = guard_of(database.obj)
            if guard is not None:
                guard.write_failed(exc)
            log.warning("stopped: %s", exc, extra={"ketter.job_id": job.id})
        elif isinstance(exc, KeyError):  # route removed from the config
            self._on_error(job.id, claimed, attempt, PermanentError(str(exc.args[0])))
        elif isinstance(exc, OSError):
            where = attempt.source if attempt else bytes(job.source_path)
            self._on_error(job.id, claimed, attempt, classify_oserror(exc, where, "transfer"))
        elif isinstance(exc, Exception):  # a bug: retried (bounded), loudly logged
            log.error("unexpected error", exc_info=exc, extra={"ketter.job_id": job.id})
            self._on_error(job.id, claimed, attempt, TransientError(f"unexpected error: {exc!r}"))
        else:  # KeyboardInterrupt, SystemExit: not a job error
            raise exc

    # -- error policy --------------------------------------------------------

    def _on_error(
        self, job_id: int, claimed: Claimed, attempt: Attempt | None, exc: KetterError
    ) -> None:
        job = Job.get_by_id(job_id)
        if job.claim != claimed.claim:
            return  # lost meanwhile; the new owner decides
        state = attempt.state if attempt is not None else State(job.state)
        message = exc.message
        now = self.clock()
        log.warning(
            "job error: %s",
            message,
            extra={
                "ketter.job_id": job_id,
                "ketter.route": job.route,
                "error.type": type(exc).__name__,
            },
        )
        room: int | None = None
        room_pauses = 0
        wait = 0.0
        if isinstance(exc, DestinationFull):
            # "Does not fit" pauses the route until the job's size is free
            # (R-J7); it never uses attempts (it used to fail the job for good
            # within minutes), and the pause is what `health` and `status`
            # show (issue #14, finding 17). It is never taken for the job's own
            # problem: a quota (EDQUOT) or another writer can refuse a write
            # while the filesystem still counts free space, and then the job
            # waits a backoff so the resumed route does not hit it at once.
            # That backoff is the route's (``resume_at``), doubling with each
            # pause for room with nothing delivered in between, and only the
            # first pause of such an episode alerts: the sweep resumed the
            # route at once and it paused again, an alert every max_delay for
            # ever (review of #14 finding 17).
            room = exc.room_needed
            if room is None:
                room = job.size or job.source_size or 0
            room_pauses = room_pauses_before(job.route) + 1
            roomy = attempt is not None and unavailable_reason(attempt.route, room=room) is None
            if attempt is not None and (roomy or room_pauses > 1):
                wait = room_backoff(room_pauses, self.config.retry.max_delay)
                message = room_wait_reason(
                    attempt.route, message, room=room, wait=wait, now=now, roomy=roomy
                )
        elif (
            isinstance(exc, RouteUnavailable)
            and attempt is not None
            and unavailable_reason(attempt.route) is None
        ):
            # The route looks fine from outside (mounted, room to spare): the
            # cause is this job's (a nested mount, a root on the wrong share),
            # so it uses attempts like any transient error instead of pausing
            # the route again and again.
            exc = TransientError(message)
        if isinstance(exc, RouteUnavailable):
            if attempt is not None and job.placed_at is None:
                # The share may be gone: then the orphan sweep cleans up later.
                with contextlib.suppress(OSError):
                    rollback(attempt.dest_dir, attempt.ctx.tag, root=attempt.spec.destination_root)
            paused = pause_route(
                job.route,
                message,
                now=now,
                room_needed=room,
                room_pauses=room_pauses if room is not None else None,
                resume_at=now + wait if wait else None,
            )
            if paused and room_pauses <= 1:
                self.notifier.notify(
                    "route_paused", job.route, f"route {job.route} paused: {message}"
                )
            self._to(
                job_id,
                state,
                S.RETRY_WAIT,
                claimed,
                error=message,
                attempt=max(job.attempt - 1, 0),
                next_attempt_at=now + wait,
                lease_owner=None,
                lease_expires_at=None,
                details={"error": message, "route_paused": True},
            )
            return
        if isinstance(exc, ChecksumMismatch) or type(exc).__name__ == "MHLMismatch":
            self.notifier.notify(
                "verify_mismatch",
                job.route,
                f"job {job.id} on route {job.route}: verification failed: {message}",
            )
        placed = job.placed_at is not None
        permanent = isinstance(exc, PermanentError)
        exhausted = job.attempt >= self.config.retry.max_attempts
        superseded = not placed and type(exc).__name__ == "SourceSuperseded"
        in_use = type(exc).__name__ == "SourceInUse"
        if in_use:
            # A writer still holds the source open: wait for it, whatever
            # the attempts (never delete, nor rename into place, a file being
            # written, #14 finding 15),
            # looking again every max_delay (a render may take hours).
            exhausted = False
            Job.update(attempt=max(job.attempt - 1, 0)).where(
                (Job.id == job_id) & (Job.claim == claimed.claim)
            ).execute()
        if placed:
            if permanent or exhausted:
                self._to(
                    job_id,
                    state,
                    S.FAILED,
                    claimed,
                    error=message,
                    completed_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    details={"error": message, "delivery_kept": True},
                )
                self.job_failed(job, f"{message} (the delivery is in place and kept)")
            else:
                delay = self.config.retry.max_delay if in_use else self.backoff(job.attempt)
                self._to(
                    job_id,
                    state,
                    S.RETRY_WAIT,
                    claimed,
                    error=message,
                    next_attempt_at=now + delay,
                    lease_owner=None,
                    lease_expires_at=None,
                    details={"error": message, "delay_s": round(delay, 3)},
                )
                self.ring_later(job_id, delay)
            return
        target = S.FAILED if (permanent or exhausted) else S.RETRY_WAIT
        if superseded:
            target = S.SUPERSEDED
        if exhausted and not permanent:
            message = f"{message} (gave up after {job.attempt} attempts)"
        if state is S.ROLLING_BACK:
            Job.update(error=message).where(Job.id == job_id).execute()
        else:
            self._to(
                job_id,
                state,
                S.ROLLING_BACK,
                claimed,
                error=message,
                rollback_to=target.value,
                details={"error": message, "permanent": permanent},
            )
        if attempt is not None:
            attempt.state = S.ROLLING_BACK
            try:
                attempt.finish_rollback()
            except Exception as undo_error:  # e.g. EACCES on a temporary
                # Stay in rolling_back, let go of the job, try again after a
                # backoff; after max_attempts drive() fails it for good.
                delay = self.backoff(job.attempt)
                log.warning("rollback failed: %s", undo_error, extra={"ketter.job_id": job_id})
                Job.update(
                    lease_owner=None, lease_expires_at=None, next_attempt_at=now + delay
                ).where((Job.id == job_id) & (Job.claim == claimed.claim)).execute()
                self.ring_later(job_id, delay)
        else:  # no attempt object (route gone): nothing was written
            self._to(
                job_id,
                S.ROLLING_BACK,
                target,
                claimed,
                rollback_to=None,
                completed_at=now if target is S.FAILED else None,
                next_attempt_at=now,
                details={"error": message},
            )
            if target is S.FAILED:
                self.job_failed(job, message)

    def _to(
        self,
        job_id: int,
        state: State,
        new: State,
        claimed: Claimed,
        details: dict | None = None,
        **fields: Any,
    ) -> None:
        transition(
            job_id, state, new, claim=claimed.claim, now=self.clock(), details=details, **fields
        )

    # -- helpers used by the steps --------------------------------------------

    def backoff(self, attempt: int) -> float:
        retry = self.config.retry
        return compute_backoff(
            max(attempt, 1),
            base_delay=retry.base_delay,
            max_delay=retry.max_delay,
            jitter=retry.jitter,
            rng=self.rng,
        )

    def ring_later(self, job_id: int, delay: float) -> None:
        if self._ring is not None:
            self._ring(job_id, delay)

    def job_failed(self, job: Job, error: str) -> None:
        log.error(
            "job failed: %s",
            error,
            extra={
                "ketter.job_id": job.id,
                "ketter.route": job.route,
                "file.path": readable(job.source_path),
            },
        )
        self.notifier.notify(
            "job_failed",
            job.route,
            f"job {job.id} on route {job.route} failed: {readable(job.source_path)}: {error}",
        )
