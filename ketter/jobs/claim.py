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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ketter.config import Config
from ketter.errors import LostClaim
from ketter.store.ports.leases import MatesOf, Taken
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    from ketter.store.port import JobStore


def owner_name(node: str) -> str:
    """``node/pid/thread`` of the caller: who holds a lease."""
    return f"{node}/{os.getpid()}/{threading.current_thread().name}"


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
    row: JobRow | None = field(default=None, compare=False, repr=False)
    #: More jobs claimed with this one, for a batch (``claim_job``'s ``mates``).
    mates: tuple[Claimed, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, taken: Taken) -> Claimed:
        """What the store's claim took, as the worker holds it."""
        job = taken.row
        return cls(
            job.id,
            taken.claim,
            job.state,
            taken.recovered,
            taken.released,
            job.attempt,
            taken.previous_owner,
            job,
            tuple(cls.of(mate) for mate in taken.mates),
        )

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


def ensure_claim(store: JobStore, job_id: int, claim: str) -> None:
    """Raise :class:`LostClaim` unless ``claim`` still holds the job: checked
    right before the irreversible steps (placement, source deletion).

    Raises :class:`ketter.errors.StoreLost` first when the job store was
    deleted or replaced under this process: the claim is then recorded
    nowhere that counts (issue #14 finding 9)."""
    store.ensure_intact(f"job {job_id}")
    current = store.claim_holder(job_id)
    if current != claim:
        raise LostClaim(
            f"job {job_id}: claim {claim} was taken over by {current}; this "
            "worker neither places nor deletes anything"
        )


def claim_job(
    store: JobStore,
    config: Config,
    *,
    hint: int | None,
    owner: str,
    now: float,
    mates: MatesOf | None = None,
) -> Claimed | None:
    """Claim the hinted job or the best due job; ``None`` when nothing is due.

    One IMMEDIATE transaction: the candidate query, the ``max_parallel``
    check and the compare-and-set cannot interleave with another worker's.
    A route removed from the config, or paused, is left be. ``mates``: what
    more to claim with the job taken, in the same transaction (a batch's
    mates, in :attr:`Claimed.mates`; see ``JobStore.claim_next``).
    """
    routes = {r.name: r.max_parallel or 0 for r in config.routes}
    taken = store.claim_next(
        routes, hint=hint, owner=owner, now=now, ttl=config.lease.ttl, mates=mates
    )
    return None if taken is None else Claimed.of(taken)


def renew(
    store: JobStore,
    job_id: int,
    claim: str,
    *,
    now: float,
    ttl: float,
    bytes_done: int | None = None,
    progress_at: float | None = None,
) -> bool:
    """Extend the lease; ``False`` when the claim is no longer ours."""
    return store.renew_lease(
        job_id, claim, now=now, ttl=ttl, bytes_done=bytes_done, progress_at=progress_at
    )


def release(
    store: JobStore,
    job_id: int,
    claim: str,
    *,
    now: float,
    reason: str,
    bytes_done: int | None = None,
) -> bool:
    """Give the job back without using up an attempt (graceful stop).

    The state is kept: the next claim resumes the job from where it stopped.
    ``bytes_done``: what the stop left for that resume (the kept partial's
    size), recorded on the row and in the ``release`` event; the row's own
    figure is only as fresh as the last lease renewal, and a 768 MiB copy
    stopped between two renewals was released as ``bytes_done: 0``.
    """
    return store.release_lease(job_id, claim, now=now, reason=reason, bytes_done=bytes_done)
