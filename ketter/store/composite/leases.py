"""The leases area's composite operations, written once: the claims (which
job is taken, whether it is fresh, recovered from a crash or resumed after a
graceful release, the attempt it uses up, its event), the sweep's due list
under ``max_parallel``, a renewal, a release and the operator's re-queue;
over the backend's candidate queries and the raw claim statement
(:meth:`_claim_row` with its event, one per transfer)."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ketter.jobs.states import State
from ketter.store.composite.jobs import CompositeJobs
from ketter.store.ports.leases import FRESH_STATES, Mates, MatesOf, Taken, new_token
from ketter.store.rows import JobRow

#: Due jobs :meth:`CompositeLeases.claim_next` looks at past the hint: the
#: first of an eligible route is taken (building more rows cost more than
#: the claim itself).
CANDIDATES = 64
#: :meth:`CompositeLeases._first_claimable`'s answer when some job may be
#: claimable and the backend did not read which is the best (no job has id 0).
SOME_JOB = 0


class _Refused(Exception):
    """A claim of a batch's shared commit changed no row: none holds."""


class _MatesRefused(Exception):
    """A claim of the mates taken with a job changed no row: the whole
    claim is undone and taken again without them."""


class CompositeLeases(CompositeJobs):
    """Claims, releases and the sweep's choices (see
    :class:`ketter.store.ports.leases.LeasesPort`)."""

    @abc.abstractmethod
    def paused_route_names(self) -> set[str]: ...

    @abc.abstractmethod
    def lease_clock(self, now: float) -> float: ...

    @abc.abstractmethod
    def _running(self, route: str, now: float) -> int:
        """Active jobs of ``route`` under a live lease at ``now`` (``max_parallel``)."""

    @abc.abstractmethod
    def _claimable_job(self, job_id: int, now: float) -> JobRow | None:
        """The job if it is claimable at ``now``: active, its lease absent or
        expired, due."""

    @abc.abstractmethod
    def _first_claimable(self, routes: Sequence[str], now: float) -> int | None:
        """The id of the best job of ``routes`` claimable at ``now`` (on the
        leases' clock; highest priority, then oldest), read without the
        write turn; ``None`` only when none is (paused routes and
        ``max_parallel`` are not looked at); :data:`SOME_JOB` where the
        backend does not read which job is the best."""

    @abc.abstractmethod
    def _due_jobs(
        self, routes: Sequence[str], now: float, limit: int, *, lock: bool = True
    ) -> list[tuple[int, int, str]]:
        """``(priority, id, route)`` of the jobs of ``routes`` claimable at
        ``now``, best first (highest priority, then oldest), at most
        ``limit``. ``lock``: their rows locked for the caller's claim (a row
        another claimant holds is skipped); the sweep's list locks none."""

    @abc.abstractmethod
    def _fresh_file_jobs(
        self, route: str, now: float, *, mode: str, max_size: int, limit: int
    ) -> list[JobRow]:
        """Claimable ``detected`` file jobs of ``route`` never leased, created
        under ``mode``, of at most ``max_size`` bytes; best first, at most
        ``limit``."""

    @abc.abstractmethod
    def _claim_row(
        self,
        job: JobRow,
        token: str,
        owner: str,
        attempt: int,
        now: float,
        ttl: float,
        event: dict[str, Any],
    ) -> bool:
        """Set the claim on the job if it is still as read (``job.claim``,
        ``job.state``): ``claim``, ``lease_owner``, ``lease_expires_at = now
        + ttl``, ``attempt``, ``progress_at = updated_at = now``,
        ``started_at`` (if unset) ``= now``; and insert the sealed ``event``
        row; ``False`` when no row matched (and nothing was written)."""

    def _lease_event(
        self, event: str, job: JobRow, *, now: float, attempt: int, details: dict[str, Any]
    ) -> None:
        """The event of a lease change (the job stays in its state)."""
        self.append_event(
            event,
            now=now,
            job_id=job.id,
            route=job.route,
            from_state=job.state,
            to_state=job.state,
            attempt=attempt,
            details=details,
        )

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
        # Most doorbells find their job taken already (by a batch): a look
        # without the write turn first, so that they do not queue for it
        # (PostgreSQL: every node's writers wait for the one turn). A job
        # that becomes claimable just after is rung again (its own ring
        # follows its commit; the sweep rings due and expired ones).
        first = self._first_claimable(list(routes), now)
        if first is None:
            return None
        # One transaction (IMMEDIATE on SQLite): the candidate query, the
        # max_parallel check and the compare-and-set cannot interleave with
        # another worker's.
        try:
            with self.transaction():
                now = self.lease_clock(now)
                paused = self.paused_route_names()

                def eligible(route: str) -> bool:
                    if route not in routes or route in paused:
                        return False  # route removed from the config, or paused: leave it be
                    limit = routes[route]
                    return not limit or self._running(route, now) < limit

                # The hint first, by primary key: the common case costs one lookup.
                if hint is not None:
                    job = self._claimable_job(hint, now)
                    if job is not None and eligible(job.route):
                        return self._take_with(mates, job, owner, now, ttl)
                # Then the best job the look before the turn found, by primary
                # key too: most doorbells' own job was taken by a batch, and the
                # search below reads more under the turn. A job that became the
                # best since (a higher priority, a lease run out) is a doorbell's
                # ring away; one this look found taken meanwhile leaves the search.
                if first not in (SOME_JOB, hint):
                    job = self._claimable_job(first, now)
                    if job is not None and eligible(job.route):
                        return self._take_with(mates, job, owner, now, ttl)
                running_routes = [name for name in routes if name not in paused]
                # Ids and routes only: the hint of most messages was taken by a
                # batch already, and building 64 rows to take one cost more than
                # the claim itself. Each route's max_parallel is counted only
                # when one of its jobs comes up; when every candidate was of a
                # full route, the search goes on without those routes (their 64
                # best hid another route's due job, and the doorbell that could
                # have taken it went unused while the sweep counted it pending).
                verdicts: dict[str, bool] = {}
                while running_routes:
                    candidates = self._due_jobs(running_routes, now, CANDIDATES)
                    for _priority, job_id, route in candidates:
                        if route not in verdicts:
                            verdicts[route] = eligible(route)
                        if verdicts[route]:
                            found = self.find_job(job_id)
                            assert found is not None  # read inside the same transaction
                            return self._take_with(mates, found, owner, now, ttl)
                    if len(candidates) < CANDIDATES:
                        return None  # every due job seen: none on a route with room
                    running_routes = [name for name in running_routes if verdicts.get(name, True)]
        except _MatesRefused:  # pragma: no cover - impossible under the write turn
            # The mates' claims were refused and the whole claim undone: the
            # job is taken again, alone.
            return self.claim_next(routes, hint=hint, owner=owner, now=now, ttl=ttl)
        return None

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
        ask = Mates(limit=limit, max_size=max_size, mode=mode, max_parallel=max_parallel)
        try:
            with self.transaction():
                now = self.lease_clock(now)
                if route in self.paused_route_names():
                    return []
                return self._take_fresh(route, ask, owner, now, ttl)
        except _Refused:
            return []

    def _take_with(
        self, mates: MatesOf | None, job: JobRow, owner: str, now: float, ttl: float
    ) -> Taken | None:
        """:meth:`_take` ``job``, and the mates ``mates`` asks for with it
        (in the caller's transaction, on a route known not to be paused)."""
        taken = self._take(job, owner, now, ttl)
        ask = None if taken is None or mates is None else mates(taken)
        if taken is None or ask is None:
            return taken
        try:
            more = self._take_fresh(job.route, ask, owner, now, ttl)
        except _Refused:
            raise _MatesRefused from None  # pragma: no cover - see _take_fresh
        return dataclasses.replace(taken, mates=tuple(more))

    def _take_fresh(
        self, route: str, ask: Mates, owner: str, now: float, ttl: float
    ) -> list[Taken]:
        """Up to ``ask.limit`` fresh file jobs of ``route`` (see
        :class:`~ketter.store.ports.leases.Mates`), taken in the caller's
        transaction; raises :class:`_Refused` when one of them was not (the
        caller rolls the transaction back)."""
        limit = ask.limit
        if ask.max_parallel:
            limit = min(limit, ask.max_parallel - self._running(route, now))
        if limit <= 0:
            return []
        jobs = self._fresh_file_jobs(route, now, mode=ask.mode, max_size=ask.max_size, limit=limit)
        taken: list[Taken] = []
        # Flat: a backend may send every claim at the end, together
        # (PostgreSQL: one round trip for the batch, not one each).
        with self._flat():
            for job in jobs:
                got = self._take(job, owner, now, ttl)
                if got is not None:
                    taken.append(got)
            if not self._settle():
                # Read in this transaction, under the write turn: only a
                # writer outside it could have changed a row.
                raise _Refused
        return taken

    def _take(self, job: JobRow, owner: str, now: float, ttl: float) -> Taken | None:
        """Claim ``job`` (a copy, read in the caller's transaction) with its
        event; the row as the claim left it."""
        token = new_token()
        previous = job.lease_owner
        fresh = job.state in FRESH_STATES
        # The previous holder died with the lease (crash), whatever the state.
        recovered = previous is not None
        released = not fresh and previous is None
        # A graceful release does not use up an attempt; a crash does (a job
        # that kills its worker every time must end up failed, not loop forever).
        attempt = job.attempt + (0 if released else 1)
        event = "recover" if recovered else ("resume" if released else "claim")
        details = {"owner": owner, "claim": token, "previous_owner": previous}
        row = self._next_event(
            event,
            now=now,
            job_id=job.id,
            route=job.route,
            from_state=job.state,
            to_state=job.state,
            attempt=attempt,
            details=details,
        )
        if not self._claim_row(job, token, owner, attempt, now, ttl, row):
            return None  # pragma: no cover - impossible inside the claim's transaction
        self._appended(row, details)
        job.claim, job.lease_owner, job.attempt = token, owner, attempt
        job.lease_expires_at, job.started_at = now + ttl, job.started_at or now
        job.progress_at = job.updated_at = now
        return Taken(job, token, recovered, released, previous)

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
        # The clock read and the fenced update are two statements: a
        # process stalled in between sets a lease that ends earlier than it
        # would have (the safe side), never one past its time.
        values: dict[str, Any] = {"lease_expires_at": self.lease_clock(now) + ttl}
        if bytes_done is not None:
            values["bytes_done"] = bytes_done
        if progress_at is not None:
            values["progress_at"] = progress_at
        return self._update_held(job_id, claim, values)

    def release_lease(
        self, job_id: int, claim: str, *, now: float, reason: str, bytes_done: int | None = None
    ) -> bool:
        with self.transaction():
            job = self.find_job(job_id)
            if job is None or job.claim != claim:
                return False
            kept = job.bytes_done if bytes_done is None else bytes_done
            self.compare_and_set(
                job_id,
                state=job.state,
                claim=claim,
                values={
                    "claim": None,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "next_attempt_at": now,
                    "updated_at": now,
                    "bytes_done": kept,
                },
            )
            details = {"reason": reason, "bytes_done": kept}
            self._lease_event("release", job, now=now, attempt=job.attempt, details=details)
        return True

    def due_job_ids(self, routes: Mapping[str, int], *, now: float, limit: int) -> list[int]:
        now = self.lease_clock(now)
        paused = self.paused_route_names()
        running = {name: cap for name, cap in routes.items() if name not in paused}
        # The routes without a limit in one query; each limited one gives at
        # most its free slots.
        unlimited = [name for name, cap in running.items() if not cap]
        # Without row locks: a claim running meanwhile would skip the rows
        # this list locked and let its doorbell go unused.
        picked = self._due_jobs(unlimited, now, limit, lock=False) if unlimited else []
        for name, cap in running.items():
            if not cap:
                continue
            free = max(cap - self._running(name, now), 0)
            if free:
                picked += self._due_jobs([name], now, free, lock=False)
        picked.sort(key=lambda due: (-due[0], due[1]))
        return [job_id for _, job_id, _ in picked[:limit]]

    def make_due_now(self, job_id: int, *, now: float, by: str) -> bool:
        with self.transaction():
            job = self.find_job(job_id)
            if job is None or job.state != State.RETRY_WAIT.value:
                return False
            self.compare_and_set(
                job_id,
                state=job.state,
                claim=job.claim,
                values={"next_attempt_at": now, "attempt": 0, "updated_at": now},
            )
            details = {"by": by, "was_due_at": job.next_attempt_at}
            self._lease_event("requeue", job, now=now, attempt=0, details=details)
        return True
