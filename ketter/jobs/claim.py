"""Claiming, renewing and releasing jobs: leases with fencing tokens.

A worker owns a job only while its lease is live and the job's ``claim``
column holds the worker's token. Every later write (transition, placement,
source deletion) is conditional on that token (``… WHERE id=? AND claim=?``),
so a worker that stalled past its lease and was replaced stops at its next
step instead of racing the new owner.

The message that woke the worker is a *hint*: the worker claims the hinted
job if it is claimable, else the best due job (highest ``priority``, then
oldest). Each message thus yields at most one claim and no due job is left
without a doorbell as long as messages ≥ due jobs (the sweep keeps it so).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from ketter.audit.chain import record_event
from ketter.config import Config, RouteConfig
from ketter.errors import LostClaim
from ketter.jobs.states import TERMINAL, State
from ketter.store.guard import ensure_store_intact
from ketter.store.models import Job, database, select_jobs

ACTIVE = [s.value for s in State if s not in TERMINAL]
#: States in which a claim starts a new attempt (as opposed to taking over an
#: attempt that a crashed or stopped worker left in flight).
_FRESH = (State.DETECTED.value, State.RETRY_WAIT.value)


def owner_name(node: str) -> str:
    """``node/pid/thread`` of the caller: who holds a lease."""
    return f"{node}/{os.getpid()}/{threading.current_thread().name}"


def new_token() -> str:
    """A fresh claim token (also part of the job's temporary file names)."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Claimed:
    """A job this worker now owns."""

    job_id: int
    claim: str
    state: str
    #: The previous owner died holding the lease (crash recovery).
    recovered: bool
    #: The previous owner released the job on a graceful stop.
    released: bool
    attempt: int
    #: ``node/pid/thread`` of the previous lease holder, if any.
    previous_owner: str | None = None
    #: The job row as claimed (saves the runner a second read).
    row: Any = field(default=None, compare=False, repr=False)

    def previous_owner_gone(self, node: str) -> bool:
        """True when no earlier holder can still be writing this job's files:
        it released the job, or it was a process of this node that is dead.
        A holder that is alive but stalled (SIGSTOP, hung mount) may wake up
        and write into its partial, so its partial must not be adopted."""
        if self.previous_owner is None:
            return True
        owner_node, _, rest = self.previous_owner.partition("/")
        pid_text = rest.split("/", 1)[0]
        if owner_node != node or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():
            return False  # a thread of ours that lost its lease may still run
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


# state IN (active states), not NOT IN (terminal): the former uses the
# (state, next_attempt_at) index, the latter scans every job ever run.
_ACTIVE_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in ACTIVE))
_CLAIMABLE = (
    f"{_ACTIVE_SQL} AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
)


def paused_routes() -> set[str]:
    rows = database.obj.execute_sql("SELECT route FROM route_status WHERE paused = 1")
    return {row[0] for row in rows}


def ensure_claim(job_id: int, claim: str) -> None:
    """Raise :class:`LostClaim` unless ``claim`` still holds the job: checked
    right before the irreversible steps (placement, source deletion).

    Raises :class:`ketter.errors.StoreLost` first when the job store was
    deleted or replaced under this process: the claim is then recorded
    nowhere that counts (issue #14 finding 9)."""
    ensure_store_intact(database.obj, f"job {job_id}")
    row = database.obj.execute_sql("SELECT claim FROM jobs WHERE id = ?", (job_id,)).fetchone()
    current = row[0] if row else None
    if current != claim:
        raise LostClaim(
            f"job {job_id}: claim {claim} was taken over by {current}; this "
            "worker neither places nor deletes anything"
        )


def claim_job(config: Config, *, hint: int | None, owner: str, now: float) -> Claimed | None:
    """Claim the hinted job or the best due job; ``None`` when nothing is due.

    One IMMEDIATE transaction: the candidate query, the ``max_parallel``
    check and the compare-and-set cannot interleave with another worker's.
    """
    db = database.obj
    routes = {r.name: r for r in config.routes}
    # Raw SQL (select_jobs): one claim per transfer, and building these queries
    # with peewee cost more than running them.
    with db.atomic():
        paused = paused_routes()

        def eligible(route_name: str) -> bool:
            route = routes.get(route_name)
            if route is None or route_name in paused:
                return False  # route removed from the config, or paused: leave it be
            return not route.max_parallel or _running(route_name, now) < route.max_parallel

        # The hint first, by primary key: the common case costs one lookup.
        if hint is not None:
            for job in select_jobs(f"id = ? AND {_CLAIMABLE}", hint, now, now):
                if eligible(job.route):
                    return _take(job, owner, now, config.lease.ttl)
        running_routes = [name for name in routes if name not in paused]
        if not running_routes:
            return None
        marks = ", ".join("?" for _ in running_routes)
        # Ids and routes only: the hint of most messages was taken by a batch
        # already, and building 64 rows into models to take one cost more
        # than the claim itself.
        candidates = db.execute_sql(
            f"SELECT id, route FROM jobs WHERE {_CLAIMABLE} AND route IN ({marks}) "
            "ORDER BY priority DESC, id LIMIT 64",
            (now, now, *running_routes),
        ).fetchall()
        verdicts: dict[str, bool] = {}
        for job_id, route_name in candidates:
            if route_name not in verdicts:
                verdicts[route_name] = eligible(route_name)
            if verdicts[route_name]:
                (job,) = select_jobs("id = ?", job_id)
                return _take(job, owner, now, config.lease.ttl)
    return None


def _running(route_name: str, now: float) -> int:
    """Jobs of the route under a live lease (for ``max_parallel``)."""
    return int(
        database.obj.execute_sql(
            f"SELECT count(*) FROM jobs WHERE route = ? AND {_ACTIVE_SQL} AND lease_expires_at > ?",
            (route_name, now),
        ).fetchone()[0]
    )


def claim_more(
    config: Config,
    route: RouteConfig,
    *,
    owner: str,
    now: float,
    limit: int,
    max_size: int,
    mode: str,
) -> list[Claimed]:
    """Claim up to ``limit`` more fresh file jobs of ``route`` (state
    ``detected``, never claimed, at most ``max_size`` bytes, created under
    ``mode``) for a batch (:mod:`ketter.jobs.batch`): one transaction, a
    token, a lease and a ``claim`` event each. Respects the route's
    ``max_parallel`` and pauses."""
    route_name = route.name
    taken: list[Claimed] = []
    with database.obj.atomic():
        if route_name in paused_routes():
            return []
        if route.max_parallel:
            limit = min(limit, route.max_parallel - _running(route_name, now))
        if limit <= 0:
            return []
        for job in select_jobs(
            f"{_CLAIMABLE} AND route = ? AND state = ? AND lease_owner IS NULL "
            "AND kind = 'file' AND mode = ? AND source_size <= ? "
            "ORDER BY priority DESC, id LIMIT ?",
            now,
            now,
            route_name,
            State.DETECTED.value,
            mode,
            max_size,
            limit,
        ):
            claimed = _take(job, owner, now, config.lease.ttl)
            if claimed is not None:
                taken.append(claimed)
    return taken


def _take(job: Job, owner: str, now: float, ttl: float) -> Claimed | None:
    token = new_token()
    previous = job.lease_owner
    fresh = job.state in _FRESH
    # The previous holder died with the lease (crash), whatever the state.
    recovered = job.lease_owner is not None
    released = not fresh and job.lease_owner is None
    # A graceful release does not use up an attempt; a crash does (a job that
    # kills its worker every time must end up failed, not loop forever).
    attempt = job.attempt + (0 if released else 1)
    # Raw SQL: one claim per transfer, and peewee's builder costs a millisecond.
    updated = database.obj.execute_sql(
        "UPDATE jobs SET claim = ?, lease_owner = ?, lease_expires_at = ?, attempt = ?, "
        "progress_at = ?, updated_at = ?, started_at = ? "
        "WHERE id = ? AND claim IS ? AND state = ?",
        (
            token,
            owner,
            now + ttl,
            attempt,
            now,
            now,
            job.started_at or now,
            job.id,
            job.claim,
            job.state,
        ),
    ).rowcount
    if updated != 1:  # pragma: no cover - impossible inside the IMMEDIATE transaction
        return None
    event = "recover" if recovered else ("resume" if released else "claim")
    record_event(
        event,
        now=now,
        job_id=job.id,
        route=job.route,
        from_state=job.state,
        to_state=job.state,
        attempt=attempt,
        details={"owner": owner, "claim": token, "previous_owner": job.lease_owner},
    )
    job.claim, job.lease_owner, job.attempt = token, owner, attempt
    job.lease_expires_at, job.started_at = now + ttl, job.started_at or now
    return Claimed(job.id, token, job.state, recovered, released, attempt, previous, job)


def renew(
    job_id: int,
    claim: str,
    *,
    now: float,
    ttl: float,
    bytes_done: int | None = None,
    progress_at: float | None = None,
) -> bool:
    """Extend the lease; ``False`` when the claim is no longer ours."""
    fields: dict[str, object] = {"lease_expires_at": now + ttl}
    if bytes_done is not None:
        fields["bytes_done"] = bytes_done
    if progress_at is not None:
        fields["progress_at"] = progress_at
    return Job.update(**fields).where((Job.id == job_id) & (Job.claim == claim)).execute() == 1


def release(
    job_id: int, claim: str, *, now: float, reason: str, bytes_done: int | None = None
) -> bool:
    """Give the job back without using up an attempt (graceful stop).

    The state is kept: the next claim resumes the job from where it stopped.
    ``bytes_done``: what the stop left for that resume (the kept partial's
    size), recorded on the row and in the ``release`` event; the row's own
    figure is only as fresh as the last lease renewal, and a 768 MiB copy
    stopped between two renewals was released as ``bytes_done: 0``.
    """
    db = database.obj
    with db.atomic():
        job = Job.get_or_none((Job.id == job_id) & (Job.claim == claim))
        if job is None:
            return False
        kept = job.bytes_done if bytes_done is None else bytes_done
        Job.update(
            claim=None,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=now,
            updated_at=now,
            bytes_done=kept,
        ).where((Job.id == job_id) & (Job.claim == claim)).execute()
        record_event(
            "release",
            now=now,
            job_id=job_id,
            route=job.route,
            from_state=job.state,
            to_state=job.state,
            attempt=job.attempt,
            details={"reason": reason, "bytes_done": kept},
        )
    return True
