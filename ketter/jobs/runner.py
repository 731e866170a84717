"""The worker's side of a job: claim it, run its steps, carry out what an error means.

What an error means is decided by :mod:`ketter.jobs.policy` (a pure
function, tested as a table; docs/guarantees.md); :meth:`JobRunner.apply`
carries the decision out (transitions, rollback, route pause, alerts, the
next ring) in one place. The ``job_failed`` and ``route_paused`` alerts are
sent by :class:`ketter.events.AlertSubscriber` from the committed ``fail`` and
``route_paused`` events (a rolled-back change alerts nobody); the runner
subscribes its notifier on the process's event bus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ketter.choices import Mode
from ketter.config import Config, RouteConfig
from ketter.engine.cleanup import rollback
from ketter.errors import KetterError, RouteRemoved
from ketter.events import AlertSubscriber
from ketter.jobs.backoff import compute_backoff
from ketter.jobs.batch import Batch, batchable, mates_limits
from ketter.jobs.claim import Claimed, claim_job, owner_name, release
from ketter.jobs.delivered import log_completed, log_delivered
from ketter.jobs.lease import ActiveJob, JobContext, LeaseKeeper
from ketter.jobs.policy import (
    Action,
    Alert,
    Decision,
    JobFacts,
    RouteLook,
    Stop,
    decide,
    looks_at_route,
    room_needed,
    triage,
)
from ketter.jobs.routes import (
    pause_route,
    room_pauses_before,
    room_wait_reason,
    unavailable_reason,
)
from ketter.jobs.shares import ShareCheck
from ketter.jobs.spec import spec_for
from ketter.jobs.states import DEFAULT_EVENT, State
from ketter.jobs.steps import Attempt
from ketter.jobs.transitions import Step, advance, transition
from ketter.paths import readable
from ketter.runtime.faults import fault
from ketter.runtime.signals import Shutdown
from ketter.store.ports.leases import Mates, Taken
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.jobs")
S = State


def _plain(value: object) -> object:
    """A warning's detail as the chain's JSON holds it (paths as text)."""
    if isinstance(value, bytes):
        return readable(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Notifier(Protocol):
    """Where alerts go (apprise in production; a list in tests)."""

    def notify(self, kind: str, route: str | None, message: str) -> None: ...


class LogNotifier:
    """Default notifier: a warning in the operational log."""

    def notify(self, kind: str, route: str | None, message: str) -> None:
        log.warning("alert: %s", message, extra={"alert.kind": kind, "ketter.route": route})


class JobRunner:
    """Runs claimed jobs for one workers process of ``threads`` worker
    threads (thread-safe: no shared state but the lease keeper's registry
    and the count of threads running a job, which sizes the batches)."""

    def __init__(
        self,
        config: Config,
        *,
        store: JobStore,
        shutdown: Shutdown,
        keeper: LeaseKeeper,
        ring: Callable[[int, float], None] | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_progress: Callable[[ActiveJob], None] | None = None,
        threads: int = 1,
    ) -> None:
        self.config = config
        self.threads = threads
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.store = store
        self.shutdown = shutdown
        self.keeper = keeper
        self._ring = ring
        self.notifier = notifier or LogNotifier()
        # One alert subscriber per process (keyed): in the services it is the
        # node's notifier (ketter.node.Node) again.
        AlertSubscriber(self.notifier, store=store).subscribe(store.chain.bus)
        self.clock = clock
        self.rng = rng
        self.on_progress = on_progress
        #: Several nodes (PostgreSQL): every route root must be the share the
        #: other nodes use (:mod:`ketter.jobs.shares`); None on SQLite.
        self.shares: ShareCheck | None = (
            ShareCheck(store, config.node) if config.store.backend == "postgresql" else None
        )

    # -- entry points --------------------------------------------------------

    def handle(self, hint: int | None) -> int | None:
        """The queue task: claim the hinted (or best due) job and run it.
        Returns the id of the job run, if any."""
        with self._busy_lock:
            self._busy += 1
        try:
            return self._handle(hint)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _handle(self, hint: int | None) -> int | None:
        if self.shutdown.requested:
            return None  # the sweep re-rings after restart
        guard = self.store.guard
        if guard is not None and guard.problem:
            return None  # every route paused: store lost or not writable (sweep re-rings)
        fault("after-dequeue", store=self.store)
        claimed = claim_job(
            self.store,
            self.config,
            hint=hint,
            owner=owner_name(self.config.node),
            now=self.clock(),
            mates=self._mates_of,
        )
        if claimed is None:
            return None
        fault("after-claim", store=self.store)
        mates = list(claimed.mates)
        # Then the service log's delivery lines.
        if mates:
            batch = Batch(self, [claimed, *mates], store=self.store)
            batch.run()
            log_delivered(batch.completed())
        else:
            self.run(claimed)
            log_completed(self.store, [claimed])
        return claimed.job_id

    def _mates_of(self, taken: Taken) -> Mates | None:
        """More fresh small files of the same route, claimed with ``taken``
        in its transaction when it is one (see :mod:`ketter.jobs.batch`).
        Runs inside the claim's transaction: no store call."""
        job = taken.row
        try:
            route = self.route_of(job.route)
        except RouteRemoved:  # run() reports it
            return None
        if not batchable(job, Claimed.of(taken), route):
            return None
        assert job.source_size is not None  # batchable
        limit, largest = mates_limits(job.source_size, idle=max(self.threads - self._busy, 0))
        return Mates(
            limit=limit,
            max_size=largest,
            mode=job.mode,
            max_parallel=route.max_parallel or 0,
        )

    def run(self, claimed: Claimed) -> None:
        job = claimed.row if claimed.row is not None else self.store.get_job(claimed.job_id)
        active, ctx = self.start(job, claimed)
        attempt: Attempt | None = None
        try:
            attempt = self.attempt(job, claimed, ctx)
            attempt.drive()
        except BaseException as exc:
            self.stopped(job, claimed, attempt, exc)
        finally:
            self.keeper.remove(active)

    def start(self, job: JobRow, claimed: Claimed) -> tuple[ActiveJob, JobContext]:
        """The lease of a claimed job is kept alive from here on (until
        ``keeper.remove``)."""
        active = ActiveJob(job.id, claimed.claim, job.route, claimed.attempt)
        ctx = JobContext(
            active,
            self.shutdown,
            on_warning=lambda event, details: self.warned(active, event, details),
            on_progress=self.on_progress,
            store=self.store,
        )
        self.keeper.add(active)
        return active, ctx

    def warned(self, active: ActiveJob, warning: str, details: dict[str, Any]) -> None:
        """An engine warning of a running job (a symlink skipped in a source
        folder, a partial adopted, a folder's metadata not applied, …): a
        ``warning`` event in the job's chain and a WARNING line. Without it
        the engine's warnings of the workers were dropped: no trace anywhere.

        The event is written in its own transaction (a savepoint when the
        step is inside one); a store that cannot take it does not fail the
        job over a warning: the line still says it."""
        shown = {k: _plain(v) for k, v in details.items()}
        log.warning(
            "%s: %s",
            warning,
            ", ".join(f"{k}={v}" for k, v in shown.items()),
            extra={
                "ketter.job_id": active.job_id,
                "ketter.route": active.route,
                "ketter.warning": warning,
            },
        )
        try:
            with self.store.transaction():
                self.store.append_event(
                    "warning",
                    now=self.clock(),
                    job_id=active.job_id,
                    route=active.route,
                    attempt=active.attempt,
                    details={"warning": warning, **shown},
                )
        except Exception:
            log.exception(
                "could not record the warning %s in the audit chain",
                warning,
                extra={"ketter.job_id": active.job_id},
            )

    def route_of(self, name: str) -> RouteConfig:
        """The job's route in the config; :class:`RouteRemoved` (permanent)
        once a reload took it away. Only this lookup's KeyError means that: a
        KeyError out of the steps is a bug, retried (bounded) and logged."""
        try:
            return self.config.route(name)
        except KeyError as exc:
            raise RouteRemoved(str(exc.args[0])) from exc

    def attempt(self, job: JobRow, claimed: Claimed, ctx: JobContext) -> Attempt:
        route = self.route_of(job.route)
        # The job runs under the mode it was created with: a reload that turns a
        # copy route into a move route must not delete sources of copy jobs.
        spec = dataclasses.replace(
            spec_for(route, self.config), mode=Mode.MOVE if job.mode == Mode.MOVE else Mode.COPY
        )
        return Attempt(self, job, claimed, route, spec, ctx, store=self.store)

    def stopped(
        self, job: JobRow, claimed: Claimed, attempt: Attempt | None, exc: BaseException
    ) -> None:
        """What an exception out of a job's steps means (:mod:`ketter.jobs.policy`)."""
        where = attempt.source if attempt is not None else bytes(job.source_path)
        triaged = triage(exc, state_dir=self.config.state_dir, where=where)
        if triaged.stop is Stop.RELEASE:
            kept = attempt.kept_bytes() if attempt is not None else None
            release(
                self.store,
                job.id,
                claimed.claim,
                now=self.clock(),
                reason="shutdown",
                bytes_done=kept,
            )
            log.info("released on shutdown", extra={"ketter.job_id": job.id})
        elif triaged.stop is Stop.LET_GO:
            # Another worker owns the job now: remove only our own temporaries.
            if attempt is not None:
                rollback(attempt.dest_dir, attempt.ctx.tag, root=attempt.spec.destination_root)
            log.warning("stopped: %s", exc, extra={"ketter.job_id": job.id})
        elif triaged.stop is Stop.STORE:
            # The workers loop pauses every route and alerts (ketter.store.guard).
            guard = self.store.guard
            if guard is not None:
                guard.write_failed(exc)
            log.warning("stopped: %s", exc, extra={"ketter.job_id": job.id})
        elif triaged.stop is Stop.JOB_ERROR and triaged.error is not None:
            if triaged.unexpected:
                log.error("unexpected error", exc_info=exc, extra={"ketter.job_id": job.id})
            self._on_error(job.id, claimed, attempt, triaged.error)
        else:  # KeyboardInterrupt, SystemExit: not a job error
            raise exc

    # -- error policy --------------------------------------------------------

    def _on_error(
        self, job_id: int, claimed: Claimed, attempt: Attempt | None, exc: KetterError
    ) -> None:
        """Decide what the job error ``exc`` means, then carry it out."""
        job = self.store.get_job(job_id)
        if job.claim != claimed.claim:
            return  # lost meanwhile; the new owner decides
        state = attempt.state if attempt is not None else State(job.state)
        now = self.clock()
        log.warning(
            "job error: %s",
            exc.message,
            extra={
                "ketter.job_id": job_id,
                "ketter.route": job.route,
                "error.type": type(exc).__name__,
            },
        )
        facts = JobFacts(
            state=state,
            attempt=job.attempt,
            placed=job.placed_at is not None,
            size=job.size or job.source_size or 0,
            ran=attempt is not None,
        )
        look = self._look(exc, facts, job.route, attempt)
        decision = decide(exc, facts, now, retry=self.config.retry, route=look, rng=self.rng)
        self.apply(decision, job, claimed, attempt, state, now)

    def _look(
        self, exc: KetterError, facts: JobFacts, route: str, attempt: Attempt | None
    ) -> RouteLook | None:
        """The route from outside, looked at only for a route error (a statvfs
        on a dead share can block the worker)."""
        room = room_needed(exc, facts)
        if room is not None:
            clear = attempt is not None and unavailable_reason(attempt.route, room=room) is None
            return RouteLook(clear=clear, room_pauses_before=room_pauses_before(self.store, route))
        if looks_at_route(exc) and attempt is not None:
            clear = unavailable_reason(attempt.route) is None
            if clear and self.shares is not None:
                # Another share (or none) at a root is the route's problem,
                # not the job's: the route pauses, the job keeps its attempts.
                clear = self.shares.problem(attempt.route) is None
            return RouteLook(clear=clear)
        return None

    def apply(
        self,
        decision: Decision,
        job: JobRow,
        claimed: Claimed,
        attempt: Attempt | None,
        state: State,
        now: float,
    ) -> None:
        """Carry out ``decision`` for ``job`` (in ``state``, claimed by us):
        the one place the error policy's effects happen."""
        d, job_id, message = decision, job.id, decision.reason
        if d.action is Action.PAUSE_ROUTE:
            room = d.room
            if room is not None and room.explained and attempt is not None:
                message = room_wait_reason(
                    attempt.route,
                    message,
                    room=room.needed,
                    wait=room.wait,
                    now=now,
                    roomy=room.roomy,
                )
            if d.remove_temporaries and attempt is not None:
                # The share may be gone: then the orphan sweep cleans up later.
                with contextlib.suppress(OSError):
                    rollback(attempt.dest_dir, attempt.ctx.tag, root=attempt.spec.destination_root)
            # Its route_paused event alerts (AlertSubscriber.on_route_paused)
            # when d.alerts has Alert.ROUTE_PAUSED: the first pause of an
            # episode of pauses for room, every other pause.
            pause_route(
                self.store,
                job.route,
                message,
                now=now,
                room_needed=room.needed if room is not None else None,
                room_pauses=room.pauses if room is not None else None,
                resume_at=d.resume_at,
            )
            self._to(
                job_id,
                state,
                S.RETRY_WAIT,
                claimed,
                error=message,
                attempt=max(job.attempt - 1, 0),
                next_attempt_at=d.retry_at,
                lease_owner=None,
                lease_expires_at=None,
                details={"error": message, "route_paused": True},
            )
            return
        # Counted as a verify failure (ketter.store.composite.counting) in
        # the transaction of the transition that follows.
        mismatch = {"verify_mismatch": True} if Alert.VERIFY_MISMATCH in d.alerts else {}
        if Alert.VERIFY_MISMATCH in d.alerts:
            self.notifier.notify(
                "verify_mismatch",
                job.route,
                f"job {job.id} on route {job.route}: verification failed: {message}",
            )
        if not d.uses_attempt:
            self.store.set_attempt(job_id, claimed.claim, max(job.attempt - 1, 0))
        if d.action is Action.FAIL_KEPT:
            self._to(
                job_id,
                state,
                S.FAILED,
                claimed,
                error=message,
                completed_at=now,
                lease_owner=None,
                lease_expires_at=None,
                details={"error": message, "delivery_kept": True, **mismatch},
            )  # its fail event alerts job_failed (AlertSubscriber.on_fail)
            return
        if d.action is Action.RETRY_AT:
            delay = d.delay or 0.0
            self._to(
                job_id,
                state,
                S.RETRY_WAIT,
                claimed,
                error=message,
                next_attempt_at=d.retry_at,
                lease_owner=None,
                lease_expires_at=None,
                details={"error": message, "delay_s": round(delay, 3), **mismatch},
            )
            self.ring_later(job_id, delay)
            return
        target = d.then or S.FAILED  # Action.ROLL_BACK
        if state is S.ROLLING_BACK:
            self.store.set_error(job_id, message)
        else:
            self._to(
                job_id,
                state,
                S.ROLLING_BACK,
                claimed,
                error=message,
                rollback_to=target.value,
                details={"error": message, "permanent": d.permanent, **mismatch},
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
                # The failed undo uses up an attempt: the next claim of a job
                # let go like this is not a fresh attempt (claim._take), so
                # without it a rollback that fails the same way every time
                # (ENOTDIR: a file where a folder was) looped for ever with
                # no alert.
                self.store.let_go(job_id, claimed.claim, next_attempt_at=now + delay)
                self.ring_later(job_id, delay)
        else:  # no steps set up (route gone): nothing was written
            self._to(
                job_id,
                S.ROLLING_BACK,
                target,
                claimed,
                rollback_to=None,
                completed_at=now if target in (S.FAILED, S.CANCELLED) else None,
                next_attempt_at=now,
                details={"error": message},
            )  # to failed: its fail event alerts job_failed (Alert.JOB_FAILED)

    def _to(
        self,
        job_id: int,
        state: State,
        new: State,
        claimed: Claimed,
        details: dict | None = None,
        **fields: Any,
    ) -> None:
        if new is state:
            # Already there: a job claimed in retry_wait that stopped before
            # its first step (its route's share went away between the sweep
            # resuming the route and the claim). The same fields and event,
            # as a note: retry_wait -> retry_wait is no transition, and
            # raising here left the job to its lease's expiry, which used up
            # an attempt per outage (a placed move then failed, issue #15).
            advance(
                self.store,
                job_id,
                state,
                [Step(None, DEFAULT_EVENT[new], details, fields)],
                claim=claimed.claim,
                now=self.clock(),
            )
            return
        transition(
            self.store,
            job_id,
            state,
            new,
            claim=claimed.claim,
            now=self.clock(),
            details=details,
            **fields,
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
