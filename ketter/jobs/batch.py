"""Small files in batches: each job keeps its own steps and audit events;
the commits and the flushes are shared.

A small file costs little to copy, and most of its time went to waiting on
four flushes in a row (its temporary, the job store after ``verifying``,
its folder after the rename, the job store after ``completed``) and on
three job-store transactions. A worker that claims a fresh small file also
claims more fresh small files of the same route in the same transaction
(one claim token and lease each; up to 64 files of at most 1 MiB, or 16 of
at most 4 MiB, fewer while the process has idle threads to share a burst
with: :func:`mates_limits`) and walks them through the steps side by side:

1. each job: validate; then **one** transaction for every job's
   ``validated`` + ``transferring``;
2. each job: copy to its temporary, fsync it, evict and re-read it from
   the disk; then **one** durable transaction for every job's
   ``verifying`` (one job-store flush, with the commit);
3. each job: the rename (no-replace), its claim checked before it by **one**
   read for the batch (:mod:`ketter.jobs.fence`); then **one** fsync per
   folder;
4. each job: ``place`` + ``completed`` (a move: ``place`` in one durable
   transaction, then each source deletion, then ``delete_source`` +
   ``completed``), in **one** durable transaction: on the disk before the
   batch is reported done.

A shared transaction runs each job's steps in a savepoint: its
compare-and-set on the job's claim and state and its audit events are
exactly those of the single-job path, only committed together. Every
ordering the single-job path guarantees still holds per job (the
temporary's inode is on the disk before its rename, the rename before the
record of the placement, the placement record before a source deletion).
A job whose step fails leaves the batch and goes through the usual error
policy (:meth:`JobRunner.stopped`) on its own; the others go on. A crash
leaves each job in its own state under its own claim, recovered one by one
like any other (docs/guarantees.md).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketter.choices import Kind, Mode, SameFsMove
from ketter.engine.beneath import open_dir
from ketter.engine.hashing import fsync_folder_fd
from ketter.engine.inline import INLINE_MAX, SMALL_FILE
from ketter.engine.mounts import check_mounts
from ketter.engine.oserrors import classify_oserror
from ketter.engine.paths import split
from ketter.engine.placement import place
from ketter.engine.results import CopyResult, Placement
from ketter.errors import PathOutsideRoute, ShutdownRequested
from ketter.jobs.claim import Claimed
from ketter.jobs.fence import ClaimFence
from ketter.jobs.lease import ActiveJob
from ketter.jobs.states import State
from ketter.jobs.steps import Attempt
from ketter.jobs.transitions import Step
from ketter.runtime.flush import grouped_fsync
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    from ketter.config import RouteConfig
    from ketter.jobs.runner import JobRunner
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.jobs")

#: Jobs walked side by side by one worker thread at most (a batch's store
#: transactions and round trips are shared by all of them), ...
BATCH_MAX = 64
#: ... and the bytes their files may add up to: a batch's jobs are reported
#: done together, so a batch of the largest files batched (``INLINE_MAX``)
#: takes 16 of them.
BATCH_BYTES = 64 * SMALL_FILE
#: The fewest files a batch may take while other threads are idle: a burst
#: is spread over them (one thread walks its batch's files one by one).
BATCH_SHARE = 16
#: Conflict policies whose placement needs no look at an existing file
#: before the copy (``skip_identical`` compares first: single-job path).
_POLICIES = ("fail", "rename", "overwrite")


def batchable(job: JobRow, claimed: Claimed, route: RouteConfig) -> bool:
    """A fresh small file on a route whose steps the batch path runs."""
    return (
        claimed.state == State.DETECTED.value
        and not claimed.recovered
        and not claimed.released
        and job.kind == Kind.FILE
        and job.source_size is not None
        and job.source_size <= INLINE_MAX
        and route.conflict in _POLICIES
        # A rename-move hashes its source and renames it (Attempt.renames):
        # nothing to batch, and it may fall back to a copy only the Attempt runs.
        and not (job.mode == Mode.MOVE and route.same_fs_move == SameFsMove.RENAME)
    )


def mates_limits(size: int, idle: int = 0) -> tuple[int, int]:
    """How many mates a batch led by a file of ``size`` bytes claims, and
    the largest file a mate may be: within :data:`BATCH_MAX` files and
    :data:`BATCH_BYTES` bytes whatever the mates' sizes (a file up to
    ``SMALL_FILE`` leads up to 63 mates as small; a larger one up to 15 of
    up to ``INLINE_MAX``, any of them the lead of a batch of its own
    later). While ``idle`` other worker threads of the process wait for
    work, the batch leaves them their share of a burst: at most
    ``BATCH_MAX // (idle + 1)`` files, never fewer than :data:`BATCH_SHARE`
    (a flood keeps every thread busy, and its batches take 64)."""
    files = max(BATCH_SHARE, BATCH_MAX // (idle + 1))
    for largest in (SMALL_FILE, INLINE_MAX):
        if size <= largest:
            return min(files, BATCH_BYTES // largest) - 1, largest
    raise ValueError(f"a file of {size} bytes is not batched (at most {INLINE_MAX})")


@dataclass
class _Member:
    job: JobRow
    claimed: Claimed
    active: ActiveJob
    attempt: Attempt | None = None
    result: CopyResult | None = None
    placement: Placement | None = None
    #: Prepared by the current step, committed by :meth:`Batch._commit`.
    steps: list[Step] | None = None
    #: Out of the batch: completed (``attempt`` kept) or stopped (``None``).
    done: bool = False


class Batch:
    """One worker thread's batch (see module docstring) on the job store
    ``store``."""

    def __init__(self, runner: JobRunner, claims: list[Claimed], *, store: JobStore) -> None:
        self.store = store
        self.runner = runner
        self.members: list[_Member] = []
        for claimed in claims:
            job = claimed.row if claimed.row is not None else store.get_job(claimed.job_id)
            active, ctx = runner.start(job, claimed)
            member = _Member(job, claimed, active)
            self.members.append(member)
            try:
                member.attempt = runner.attempt(job, claimed, ctx)
            except BaseException as exc:
                self._stop(member, exc)

    def run(self) -> None:
        try:
            self._each(self._open)
            self._commit()
            self._each(self._copy)
            self._commit(durable=True)
            dirs: set[bytes] = set()
            fence = self._fence()
            self._each(lambda m: self._place(m, dirs, fence))
            self._flush_dirs(dirs)
            if any(
                m.attempt is not None and m.attempt.spec.mode == Mode.MOVE for m in self.members
            ):
                self._each(self._record_move_placement)
                self._commit(durable=True)
            self._each(self._finish)
            self._commit(completes=True, durable=True)
        finally:
            for m in self.members:
                self.runner.keeper.remove(m.active)

    # -- the steps, per job (their commits: see _commit) ------------------

    def _open(self, m: _Member) -> None:
        a = m.attempt
        assert a is not None
        a.ctx.expected_devs = check_mounts(a.spec, None)
        if self.runner.shares is not None:
            self.runner.shares.guard(a.route)
        m.steps, _ = a.transfer_steps(resume=False, validated=a.validate())

    def _copy(self, m: _Member) -> None:
        a = m.attempt
        assert a is not None
        m.result = a.copy_to_temp(resume=False)
        m.steps = [a.verifying(m.result)]

    def _fence(self) -> ClaimFence:
        """The live jobs' claims, read once before their placements."""
        claims = {m.job.id: m.attempt.claim for m in self._live() if m.attempt is not None}
        runner = self.runner
        return ClaimFence(self.store, claims, ttl=lambda: runner.config.lease.ttl, now=runner.clock)

    def _place(self, m: _Member, dirs: set[bytes], fence: ClaimFence) -> None:
        a = m.attempt
        assert a is not None and m.result is not None
        fence.ensure(a.job.id, lost=m.active.lost)
        m.placement = place(a.spec, m.result, a.ctx, sync_later=dirs)

    def _record_move_placement(self, m: _Member) -> None:
        a = m.attempt
        assert a is not None and m.placement is not None
        if a.spec.mode == Mode.MOVE:
            m.steps = [a.placed(m.placement)]

    def _finish(self, m: _Member) -> None:
        a = m.attempt
        assert a is not None and m.placement is not None
        placed = None if a.spec.mode == Mode.MOVE else a.placed(m.placement)
        m.steps = a.finishing_steps(m.placement, placed=placed)

    def _commit(self, *, completes: bool = False, durable: bool = False) -> None:
        """The steps each job prepared, in **one** transaction for the batch
        (one BEGIN, one WAL append, instead of one per job); ``durable``:
        on the disk when it returns (one flush for the batch, with the
        commit: no round trip of its own on PostgreSQL). Each job's
        steps run in their own savepoint: a job whose compare-and-set is
        refused (its claim was lost) leaves the batch, the others commit.
        If the commit itself fails (its flush among it, as on the single-job
        path), every job leaves the batch through the error policy, from the
        state it had."""
        todo = [m for m in self._live() if m.steps]
        before = [(m.attempt, m.attempt.state) for m in todo if m.attempt is not None]
        work = []
        for m in todo:
            assert m.attempt is not None and m.steps is not None
            # From the state it had: the store may run an item twice.
            work.append(functools.partial(_advance_from, m.attempt, m.attempt.state, m.steps))
        try:
            # One savepoint per job (the store's promise): a refused step is
            # undone alone and does not abort the shared transaction.
            outcomes = self.store.commit_together(work, durable=durable)
        except BaseException as exc:
            for attempt, state in before:
                attempt.state = state
            for m in todo:
                self._stop(m, exc)
            return
        finally:
            for m in todo:
                m.steps = None
        for m, error in zip(todo, outcomes, strict=True):
            if error is not None:
                self._stop(m, error)
        if completes:
            for m in todo:
                m.done = True  # completed (a refused one is done already: stopped)

    # -- the folders' flush ---------------------------------------------------

    def _flush_dirs(self, dirs: set[bytes]) -> None:
        for parent in sorted(dirs):
            placed = [
                m
                for m in self._live()
                if m.placement is not None and split(m.placement.final_path)[0] == parent
            ]
            # One route per batch: every member has the same destination root.
            root = next(
                (m.attempt.spec.destination_root for m in self.members if m.attempt is not None),
                None,
            )
            error: BaseException
            try:
                grouped_fsync(parent, functools.partial(_fsync_beneath, root, parent))
                continue
            except OSError as exc:
                error = classify_oserror(exc, parent, "flush the destination folder")
            except PathOutsideRoute as exc:
                error = exc
            for m in placed:
                self._stop(m, error)

    # -- bookkeeping --------------------------------------------------------

    def completed(self) -> list[JobRow]:
        """The rows of the jobs this batch completed, as its steps wrote them
        (their last commit held: no read back from the store to log them)."""
        return [m.attempt.written_row() for m in self.members if m.done and m.attempt is not None]

    def _live(self) -> list[_Member]:
        return [m for m in self.members if m.attempt is not None and not m.done]

    def _each(self, step: Callable[[_Member], None]) -> None:
        for m in self._live():
            # The jobs waiting for their turn progress with the batch: the
            # lease keeper must not take them for stalled (a job that hangs
            # stops the touching, so they all stall together, as they should).
            now = time.monotonic()
            for other in self._live():
                other.active.last_progress = now
            if self.runner.shutdown.requested and m.placement is None:
                # Not placed yet: given back now, resumed after the restart.
                self._stop(m, ShutdownRequested("stopping: released, resumed after the restart"))
                continue
            try:
                step(m)
            except BaseException as exc:
                self._stop(m, exc)

    def _stop(self, m: _Member, exc: BaseException) -> None:
        """The job leaves the batch through the usual error policy, and the
        lease keeper lets it go at once: a renewal while the others go on
        would give a job waiting for its retry (claim token kept, lease
        cleared) a live lease again, and keep it from its retry until that
        lease ran out."""
        attempt, m.attempt, m.done = m.attempt, None, True
        try:
            self.runner.stopped(m.job, m.claimed, attempt, exc)
        finally:
            self.runner.keeper.remove(m.active)


def _advance_from(attempt: Attempt, state: State, steps: list[Step]) -> None:
    """``attempt``'s ``steps`` from ``state`` (a shared commit's item, which
    the store may run again after rolling back a first try)."""
    attempt.state = state
    attempt.advance(steps)


def _fsync_beneath(root: bytes | None, folder: bytes) -> None:
    """fsync ``folder`` reached from the route's destination ``root`` without
    following a link (:mod:`ketter.engine.beneath`). By name, a folder
    swapped for a link after the batch's renames made Ketter flush the
    link's target and record as durable renames that were never flushed
    (#14 finding 1); a link in the way now stops the jobs of that folder."""
    fd = open_dir(root or folder, folder)
    try:
        fsync_folder_fd(fd)  # EINVAL (a network filesystem) is no error
    finally:
        os.close(fd)
