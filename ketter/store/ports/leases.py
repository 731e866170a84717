"""The job store's leases operations: claims with fencing tokens, their
renewal and release, what the recovery sweep counts, and the operator's
re-queue of a waiting job."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ketter.jobs.states import TERMINAL, State
from ketter.store.rows import JobRow

#: The states of a job not finished yet (leases, the sweep's counts).
ACTIVE_STATES = tuple(s.value for s in State if s not in TERMINAL)
#: States in which a claim starts a new attempt (as opposed to taking over an
#: attempt that a crashed or stopped worker left in flight).
FRESH_STATES = (State.DETECTED.value, State.RETRY_WAIT.value)


def new_token() -> str:
    """A fresh claim token (also part of the job's temporary file names)."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Taken:
    """A job a claim took: the row as it is after the claim (token, owner,
    lease, attempt set) and what the claim found."""

    row: JobRow
    claim: str
    #: The previous holder died with the lease (crash recovery).
    recovered: bool
    #: The previous holder released the job on a graceful stop.
    released: bool
    #: ``node/pid/thread`` of the previous lease holder, if any.
    previous_owner: str | None
    #: More jobs the same claim took with this one (:class:`Mates`).
    mates: tuple[Taken, ...] = ()


@dataclass(frozen=True)
class Mates:
    """More jobs a claim takes with the one it took, in its transaction (a
    batch, :mod:`ketter.jobs.batch`): up to ``limit`` fresh file jobs of
    the taken job's route (``detected``, never leased, at most ``max_size``
    bytes, created under ``mode``), within the route's ``max_parallel``
    (0 = no limit); what :meth:`LeasesPort.claim_batch` takes."""

    limit: int
    max_size: int
    mode: str
    max_parallel: int


#: What a claim asks for a job it took: :class:`Mates`, or ``None`` for none.
MatesOf = Callable[[Taken], Mates | None]


class LeasesPort(Protocol):
    """The leases operations of the job store.

    Leases are set and compared on one clock, :meth:`lease_clock`: the
    caller's ``now`` on SQLite (one node), the database's on PostgreSQL
    (several nodes, whose clocks differ). A claim (``claim_next``,
    ``claim_batch``) runs wholly on it: its lease, its due check, the
    row's ``started_at``/``progress_at``/``updated_at`` and its event's
    ``ts``; so do a renewal's expiry, the sweep's due list and its expired
    count. A job's ``next_attempt_at``, given on the caller's clock, is
    moved onto this one as it is written (a new job's, a release's, a
    retry's: compared with it by every claim). The other times (a step's
    ``updated_at``, the other events' ``ts``) are the caller's: a node's
    clock off by a few seconds shifts a displayed time or rate, never who
    holds a job or when it is due."""

    def lease_clock(self, now: float) -> float:
        """The time leases are set and compared with when the caller's clock
        says ``now``."""
        ...

    def claim_next(
        self,
        routes: Mapping[str, int],
        *,
        hint: int | None,
        owner: str,
        now: float,
        ttl: float,
        mates: MatesOf | None = None,
    ) -> Taken | None:
        """Claim the job ``hint`` if claimable, else the best due job (highest
        priority, then oldest; a store may take the best one a look just
        before the transaction found, if it is still claimable) of a route
        in ``routes`` (name -> max_parallel, 0 = no limit) that is not paused
        and has a free slot; one transaction
        (``claim``/``recover``/``resume`` event written with it). ``None`` when
        nothing is due. ``mates``: asked with the job taken (inside the
        transaction: no store call in it); the :class:`Mates` it returns are
        claimed in the same transaction, as :meth:`claim_batch` would, and
        come back in :attr:`Taken.mates`."""
        ...

    def claim_batch(
        self,
        route: str,
        *,
        max_parallel: int,
        owner: str,
        now: float,
        ttl: float,
        limit: int,
        max_size: int,
        mode: str,
    ) -> list[Taken]:
        """Claim up to ``limit`` fresh file jobs of ``route`` (``detected``,
        never leased, at most ``max_size`` bytes, created under ``mode``) in
        one transaction, each with its ``claim`` event; none when the route is
        paused or has no free slot of ``max_parallel`` (0 = no limit)."""
        ...

    def renew_lease(
        self,
        job_id: int,
        claim: str,
        *,
        now: float,
        ttl: float,
        bytes_done: int | None = None,
        progress_at: float | None = None,
    ) -> bool:
        """Extend the lease to ``ttl`` seconds past :meth:`lease_clock`
        (``now``), and record the progress given; ``False`` when ``claim``
        no longer holds the job."""
        ...

    def claim_holder(self, job_id: int) -> str | None:
        """The claim token that holds the job now (``None``: none, or no job)."""
        ...

    def leases_held(self, claims: Mapping[int, str], *, now: float) -> dict[int, float]:
        """For each job of ``claims`` (its id → the caller's claim token) that
        this claim still holds: the seconds its lease has left on
        :meth:`lease_clock` (``now``), ``0.0`` or less when it has run out
        (or there is none) and nobody took it yet. A job another claim
        holds, or that does not exist, is left out. One read for a whole
        batch's placements (:mod:`ketter.jobs.fence`), outside a
        transaction (on PostgreSQL its clock is the statement's ``now()``:
        inside one it would be the transaction's start)."""
        ...

    def release_lease(
        self, job_id: int, claim: str, *, now: float, reason: str, bytes_done: int | None = None
    ) -> bool:
        """Give the job back (state and attempt kept, due at ``now``) with its
        ``release`` event, in one transaction; ``False`` when ``claim`` no
        longer holds it."""
        ...

    def let_go(self, job_id: int, claim: str, *, next_attempt_at: float) -> bool:
        """Drop the lease (the claim token stays) and use up an attempt, due
        again at ``next_attempt_at`` (a rollback that failed); ``False`` when
        ``claim`` no longer holds the job."""
        ...

    def paused_route_names(self) -> set[str]:
        """The routes that take no new claims now: paused (``route_status.paused``:
        a share down, no room) or held by an operator (``route_status.held``)."""
        ...

    def due_job_ids(self, routes: Mapping[str, int], *, now: float, limit: int) -> list[int]:
        """Ids of unleased jobs that are due, of the routes in ``routes``
        (name -> max_parallel, 0 = no limit) not paused, best first, at most
        ``limit``; a limited route gives only as many as it has free slots."""
        ...

    def expired_lease_count(self, now: float) -> int:
        """Active jobs whose lease holder let the lease expire by ``now``."""
        ...

    def smallest_waiting_size(self, route: str) -> int | None:
        """The smallest known size (``size``, else ``source_size``; 0 = not
        known) of the route's active jobs; ``None`` when none is known."""
        ...

    def is_active(self, job_id: int) -> bool:
        """Whether the job exists and is not in a terminal state."""
        ...

    def make_due_now(self, job_id: int, *, now: float, by: str) -> bool:
        """Re-queue a job waiting in ``retry_wait``: due at ``now``, attempts
        reset, with a ``requeue`` event naming who (``by``) and when it was
        due, in one transaction; ``False`` (nothing written) when it is not
        waiting."""
        ...
