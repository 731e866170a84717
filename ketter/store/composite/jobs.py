"""The jobs area's composite operations, written once: :meth:`advance` (a
sequence of compare-and-sets, each with its audit event and what it adds to
the route's counters, in one transaction) and why one was refused, the
columns a write may name; over the backend's :meth:`_compare_and_set`,
:meth:`_update_held`, :meth:`find_job`, :meth:`_route_and_attempt` and
:meth:`_count`."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, NamedTuple

from ketter.audit.chain import Principal
from ketter.errors import InvalidTransition, JobCancelled, LostClaim
from ketter.store.composite.core import CompositeCore
from ketter.store.composite.counting import Tally, tally
from ketter.store.ports.jobs import JobChange
from ketter.store.ports.leases import ACTIVE_STATES
from ketter.store.rows import JOB_COLUMNS, JobRow, NoSuchJob

#: Columns a change may set (guards the backends' raw statements against typos).
_COLUMNS = frozenset(JOB_COLUMNS)


def check_columns(values: dict[str, Any]) -> None:
    """Raise ``ValueError`` for a name that is not a ``jobs`` column."""
    unknown = set(values) - _COLUMNS
    if unknown:
        raise ValueError(f"not a jobs column: {', '.join(sorted(unknown))}")


class Planned(NamedTuple):
    """One change of :meth:`CompositeJobs.advance`, ready to write: from
    ``state``, the ``values`` (``state`` among them when it moves), its
    conditions and its sealed ``event`` row."""

    state: str
    values: dict[str, Any]
    unplaced: bool
    uncancelled: bool
    event: dict[str, Any]


def one_by_one(
    store: CompositeJobs, job_id: int, claim: str | None, planned: Sequence[Planned]
) -> int:
    """:meth:`CompositeJobs._change_and_append_all` a change at a time."""
    for done, step in enumerate(planned):
        if not store._change_and_append(
            job_id, step.state, claim, step.values, step.unplaced, step.uncancelled, step.event
        ):
            return done
    return len(planned)


class CompositeJobs(CompositeCore):
    """Transitions and their audit events (see :class:`ketter.store.ports.jobs.JobsPort`)."""

    @abc.abstractmethod
    def find_job(self, job_id: int) -> JobRow | None:
        """The job, or ``None`` when there is none."""

    @abc.abstractmethod
    def _compare_and_set(
        self,
        job_id: int,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        unplaced: bool,
        uncancelled: bool = False,
    ) -> bool:
        """Set ``values`` (checked ``jobs`` columns) on the job if it is in
        ``state``, held by ``claim``, with ``unplaced`` not placed and with
        ``uncancelled`` not asked to cancel (``cancel_requested_at`` NULL);
        ``False`` when no row matched. The hot path of every transition (five
        or six per transfer): raw on every backend."""

    @abc.abstractmethod
    def _change_and_append(
        self,
        job_id: int,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        unplaced: bool,
        uncancelled: bool,
        event: dict[str, Any],
    ) -> bool:
        """:meth:`_compare_and_set`, and the sealed ``event`` row inserted
        if it matched (``False``: neither happened)."""

    @abc.abstractmethod
    def _update_held(self, job_id: int, claim: str, values: dict[str, Any]) -> bool:
        """Set ``values`` (``jobs`` columns) on the job if ``claim`` holds it
        (whatever its state); ``False`` when it does not."""

    @abc.abstractmethod
    def _route_and_attempt(self, job_id: int) -> tuple[str, int]:
        """The job's route and attempt; :class:`InvalidTransition` when
        there is no such job."""

    def compare_and_set(
        self,
        job_id: int,
        *,
        state: str,
        claim: str | None,
        values: dict[str, Any],
        only_unplaced: bool = False,
        only_uncancelled: bool = False,
    ) -> bool:
        check_columns(values)
        values = self._due_on_lease_clock(values)
        return self._compare_and_set(job_id, state, claim, values, only_unplaced, only_uncancelled)

    def set_attempt(self, job_id: int, claim: str, attempt: int) -> bool:
        return self._update_held(job_id, claim, {"attempt": attempt})

    def get_job(self, job_id: int) -> JobRow:
        job = self.find_job(job_id)
        if job is None:
            raise NoSuchJob(f"job {job_id} does not exist")
        return job

    def advance(
        self,
        job_id: int,
        state: str,
        changes: Sequence[JobChange],
        *,
        claim: str | None,
        now: float,
        durable: bool = False,
        route: str | None = None,
        attempt: int | None = None,
        actor: Principal | None = None,
    ) -> str:
        current = state
        counted = Tally()
        with self.transaction(durable=durable):
            if route is None or attempt is None:
                route, attempt = self._route_and_attempt(job_id)
            planned: list[Planned] = []
            head = self._chain_head()
            for change in changes:
                new = current if change.to is None else change.to
                values = {"updated_at": now, **change.fields}
                if change.to is not None:
                    values["state"] = new
                check_columns(values)
                values = self._due_on_lease_clock(values)
                attempt = int(values.get("attempt", attempt))
                row = self._next_event(
                    change.event,
                    after=head,
                    now=now,
                    job_id=job_id,
                    route=route,
                    from_state=current,
                    to_state=new,
                    attempt=attempt,
                    details=change.details,
                    actor=actor,
                )
                head = (int(row["id"]), str(row["hash"]))  # the next one's seal follows it
                planned.append(
                    Planned(current, values, change.only_unplaced, change.only_uncancelled, row)
                )
                current = new
            held = self._change_and_append_all(job_id, claim, planned)
            if held < len(planned):
                refused = planned[held]
                raise self.refusal(
                    job_id, refused.state, refused.values.get("state", refused.state), claim
                )
            for change, step in zip(changes, planned, strict=True):
                self._appended(step.event, change.details)
                tally(change, step.state, now=now, into=counted)
            if counted:  # in this transaction: counted once, when it commits
                self._count_later(route, counted)
        return current

    @abc.abstractmethod
    def _change_and_append_all(
        self, job_id: int, claim: str | None, planned: Sequence[Planned]
    ) -> int:
        """Each of ``planned`` in order (:meth:`_change_and_append`, each
        from the state the one before left); how many held (the first
        refused one and those after it wrote nothing). A backend may send
        them as one statement, all or none (:func:`one_by_one` is the plain
        way)."""

    def refusal(
        self, job_id: int, from_state: str, to_state: str, claim: str | None
    ) -> InvalidTransition:
        """Why a compare-and-set matched no row, from the job as it is now."""
        job = self.find_job(job_id)
        if job is None:
            return InvalidTransition(f"job {job_id} does not exist")
        if job.claim != claim:
            return LostClaim(
                f"job {job_id}: claim {claim} is no longer held (now "
                f"{job.claim or 'unclaimed'}, state {job.state}); another worker "
                "took the job over after this one's lease expired"
            )
        if job.state != from_state:
            return InvalidTransition(
                f"job {job_id} is {job.state}, not {from_state}; refused {from_state} → {to_state}"
            )
        if job.placed_at is None and job.cancel_requested_at is not None:
            return JobCancelled(
                f"job {job_id} was cancelled by {job.cancel_requested_by or 'an operator'} "
                f"before its placement; refused {from_state} → {to_state}"
            )
        return InvalidTransition(
            f"job {job_id} is placed (placed_at set) and only moves "
            f"forward; refused {from_state} → {to_state}"
        )

    def request_cancel(self, job_id: int, *, now: float, actor: Principal | None = None) -> bool:
        with self.transaction():
            job = self.find_job(job_id)
            if (
                job is None
                or job.state not in ACTIVE_STATES
                or job.placed_at is not None
                or job.cancel_requested_at is not None
            ):
                return False
            by = (actor or self.chain.actor).as_user()
            if not self.compare_and_set(
                job_id,
                state=job.state,
                claim=job.claim,
                values={"cancel_requested_at": now, "cancel_requested_by": by},
                only_unplaced=True,
            ):
                return False  # pragma: no cover - read inside the same transaction
            self.append_event(
                "cancel_requested",
                now=now,
                job_id=job_id,
                route=job.route,
                from_state=job.state,
                to_state=job.state,
                attempt=job.attempt,
                details={"by": by, "lease_owner": job.lease_owner},
                actor=actor,
            )
        return True
