"""The steps of one claimed attempt of a job, each committed before the work
that depends on it.

``detected → validated → (packaged) → transferring → verifying → completed``;
the placement (``placed_at``) is recorded durably inside ``verifying`` and is
the point of no return: after it the job only moves forward. Steps that no
crash can usefully separate share one commit, each with its own audit event:
``validated`` + ``transferring`` (nothing is written in between); on copy
routes ``place`` + ``completed``; on move routes ``delete_source`` +
``completed``. A small file thus costs four job-store commits: the claim,
validated+transferring, verifying (durable: it records the temporary's
inode before the rename), and the durable place+completed. A job claimed
in flight (its worker died or stopped) resumes from its state: a placed job
finishes its remaining work, a big enough partial file resumes, anything
else is rolled back and started again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ketter.choices import Conflict, Folders, Kind
from ketter.engine.beneath import make_dirs
from ketter.engine.mounts import check_mounts
from ketter.engine.oserrors import classify_oserror
from ketter.engine.results import CopyResult
from ketter.engine.source import SourcePlan, inspect_source
from ketter.engine.transfer import copy_and_verify, identical_result
from ketter.engine.unit import unit_strategy
from ketter.errors import DestinationConflict, DestinationFull, PermanentError
from ketter.jobs.create import file_source_key, folder_source_key
from ketter.jobs.finishing import Finishing
from ketter.jobs.recovery import Recovery
from ketter.jobs.states import State
from ketter.jobs.transitions import Step
from ketter.paths import readable
from ketter.store.ports.manifests import ManifestFile

if TYPE_CHECKING:
    pass

S = State
IN_FLIGHT = (S.VALIDATED.value, S.PACKAGED.value, S.TRANSFERRING.value, S.VERIFYING.value)


class Attempt(Finishing, Recovery):
    """One claimed run of a job (see module docstring) on the job store
    ``store``: the steps up to the verified copy; the placement and after
    (:class:`ketter.jobs.finishing.Finishing`), recovery and rollback
    (:class:`ketter.jobs.recovery.Recovery`), the bookkeeping
    (:class:`ketter.jobs.attempt_base.AttemptBase`)."""

    # -- bookkeeping -------------------------------------------------------

    # -- driving -----------------------------------------------------------

    def drive(self) -> None:
        job, state = self.job, self.state
        max_attempts = self.runner.config.retry.max_attempts
        exhausted = self.claimed.attempt > max_attempts
        if state is S.ROLLING_BACK:
            if exhausted:
                # The undo itself keeps failing or crashing: stop trying. What is
                # left is a temporary of a terminal job: the orphan sweep's.
                self._fail(
                    job,
                    {"error": job.error, "rollback": "incomplete"},
                    f"{job.error} (rollback incomplete)",
                )
                return
            # A rollback interrupted by a crash: finish it, then wait out the
            # backoff it records like any other retry.
            self.finish_rollback()
            return
        if job.cancel_requested_at is not None and job.placed_at is None:
            # Cancelled while it waited or while another worker held it: the
            # claim that finds it carries the cancel out (runner.stopped).
            from ketter.errors import JobCancelled  # here: the errors import line is shared

            raise JobCancelled(
                f"job {job.id} was cancelled by {job.cancel_requested_by or 'an operator'} "
                f"before its placement (it was {state})"
            )
        # The mount guard holds within one attempt; a share remounted between
        # attempts may have a new device number, which is not an outage.
        self.ctx.expected_devs = check_mounts(self.spec, None)
        if self.runner.shares is not None:
            self.runner.shares.guard(self.route)
        if job.placed_at is not None:
            if state in (S.RETRY_WAIT, S.DETECTED):
                self.to(S.VERIFYING, event="retry", details={"after": "placement"})
            if exhausted:
                raise PermanentError(
                    f"gave up after {max_attempts} attempts at the work left after the placement"
                )
            self.after_placement()
            return
        if state is S.VERIFYING:
            found = self._own_copy_in_place()
            if found is not None:
                # Killed between the rename and its record: the delivery is ours.
                self.final = found
                self.note(
                    "recover",
                    fsync=True,
                    placed_at=self.now(),
                    dest_path=found,
                    dest_display=readable(found),
                    details={"found": readable(found), "inode": self.job.placed_inode},
                )
                self.after_placement()
                return
        if exhausted:
            raise PermanentError(
                f"gave up after {max_attempts} attempts (the last ones "
                "were interrupted: the worker died while running it)"
            )
        if state.value in IN_FLIGHT:
            if (
                self.job.kind == Kind.FILE
                and self._resumable_partial()
                and self.claimed.previous_owner_gone(self.runner.config.node)
            ):
                self.resume_copy()
                return
            self.to(
                S.ROLLING_BACK,
                rollback_to=S.RETRY_WAIT.value,
                details={"reason": f"interrupted in {state}; starting again"},
            )
            self.finish_rollback(delay=0.0, keep_lease=True)
        if self.state is S.RETRY_WAIT:
            self.to(S.DETECTED, event="retry", details={"attempt": self.claimed.attempt})
        self.copy(resume=False, validated=self.validate())

    # -- steps ---------------------------------------------------------------

    def inspect(self) -> SourcePlan:
        """The source as it is now; refuses one that is not the detected version."""
        from ketter.errors import SourceSuperseded  # here: the errors import line is shared

        plan = inspect_source(self.spec, self.source)
        job = self.job
        if plan.kind != job.kind:
            raise PermanentError(
                f"source {readable(self.source)!r} is now a {plan.kind}, "
                f"not the {job.kind} that was detected"
            )
        rel = os.path.relpath(self.source, os.fsencode(self.route.source))
        if plan.kind == Kind.FILE:
            key = file_source_key(job.route, rel, plan.size, plan.mtime_ns, plan.ino)
            if job.source_size is None:
                pass  # submitted without an identity (one-shot transfer)
            elif key != job.source_key:
                # Replaced or rewritten before (or between) attempts: the
                # version detected no longer exists, the new one is a job of
                # its own; ends quietly ``superseded`` (#14 finding 14).
                raise SourceSuperseded(
                    f"source {readable(self.source)!r} changed since it was detected "
                    f"(size/mtime/inode differ); the new version is a new job"
                )
        else:
            if self.route.folders != Folders.AS_UNIT:
                raise PermanentError("a folder job needs a route with folders: as_unit")
            key = folder_source_key(job.route, rel, plan.listing_sha256)
            if job.source_size is not None and key != job.source_key:
                raise SourceSuperseded(
                    f"source folder {readable(self.source)!r} changed since it was detected; "
                    "the new version is a new job"
                )
        for relpath, why in plan.skipped:
            self.ctx.warn("skip", path=readable(relpath), reason=why)
        self.plan = plan
        return plan

    def validate(self) -> Step:
        """Check the source, the destination and the room; returns the
        ``validated`` step, which :meth:`copy` commits together with the
        ``transferring`` one (nothing is written in between)."""
        plan = self.inspect()
        devs = check_mounts(self.spec, self.ctx.expected_devs)
        self.ctx.expected_devs = devs
        packaged = plan.kind == Kind.FOLDER and unit_strategy(self.spec, plan).packaged
        try:
            # Never through a link planted in the destination tree (#14 finding 1).
            make_dirs(self.spec.destination_root, self.dest_dir)
        except OSError as exc:
            raise classify_oserror(exc, self.dest_dir, "create the destination folder") from exc
        if self.spec.conflict == Conflict.FAIL and os.path.lexists(self.final):
            raise DestinationConflict(
                f"destination {readable(self.final)!r} already exists and the route's "
                "conflict policy is 'fail'; remove it or change the policy, then re-queue"
            )
        if not self.renames():
            # A packaged folder needs room for the ZIP and the extracted tree
            # at once; a rename into place needs none.
            self._check_space(plan.size * (2 if packaged else 1))
        if plan.kind == Kind.FOLDER:
            self._record_manifest(plan)
        return Step(
            S.VALIDATED,
            details={
                "source": readable(self.source),
                "destination": readable(self.final),
                "size": plan.size,
                "kind": plan.kind,
            },
            fields={
                "dest_path": self.final,
                "dest_display": readable(self.final),
                "size": plan.size,
                "file_count": len(plan.files) if plan.kind == Kind.FOLDER else 1,
                "source_dev": devs.get("source"),
                "dest_dev": devs.get("destination"),
                "source_size": plan.size if plan.kind == Kind.FILE else self.job.source_size,
                # Compared again before a move deletes the source (#14 finding 2).
                "source_ctime_ns": plan.ctime_ns if plan.kind == Kind.FILE else None,
            },
        )

    def _check_space(self, size: int) -> None:
        """A job that does not fit pauses its route until it does (R-J7): it
        waits without using attempts (issue #14, finding 17); only one that
        cannot fit even in the empty destination fails."""
        from ketter.mounts import disk_usage  # here: H10's #15 fix, the import block is shared

        try:
            usage = disk_usage(self.dest_dir)
        except OSError as exc:
            raise classify_oserror(exc, self.dest_dir, "check free space") from exc
        if usage is None:
            return  # statfs gives no size (smbnetfs): free space unknown, warned once (#15)
        needed = self.route.min_free.required(usage.total)
        if size > usage.total - needed:
            raise PermanentError(
                f"{readable(self.source)!r} ({size} bytes) can never fit in "
                f"{self.route.destination} ({usage.total} bytes in all, min_free "
                f"{self.route.min_free}); deliver it to a larger destination"
            )
        if usage.free - size < needed:
            below = usage.free < needed
            raise DestinationFull(
                f"destination {self.route.destination} has {usage.free} bytes free"
                + (f", below min_free {self.route.min_free}" if below else "")
                + f"; {readable(self.source)!r} needs {size} bytes on top of min_free "
                f"{self.route.min_free} ({needed} bytes); free space, the route "
                "resumes by itself",
                room_needed=size,
            )

    def _record_manifest(self, plan: SourcePlan) -> None:
        self.store.replace_manifest(
            self.job.id,
            [
                ManifestFile(
                    relpath=e.relpath,
                    relpath_display=readable(e.relpath),
                    size=e.size,
                    mtime_ns=e.mtime_ns,
                    mode=e.mode,
                    inode=e.ino,
                    ctime_ns=e.ctime_ns,
                )
                for e in plan.files
            ],
        )

    def copy(self, *, resume: bool, validated: Step | None = None) -> None:
        self.verified(self.transfer(resume=resume, validated=validated))

    def transfer(self, *, resume: bool, validated: Step | None = None) -> CopyResult:
        """``transferring`` (with ``validated``, when given, in one commit),
        then the verified copy to the temporary, or the source hashed for a
        rename into place (:meth:`renames`); nothing placed yet."""
        renaming = not resume and self.renames()
        steps, result = self.transfer_steps(resume=resume, validated=validated, renaming=renaming)
        if steps:
            self.advance(steps)
        if result is not None:
            return result
        if renaming:
            return self.hash_in_place()
        return self.copy_to_temp(resume=resume)

    def transfer_steps(
        self, *, resume: bool, validated: Step | None = None, renaming: bool = False
    ) -> tuple[list[Step], CopyResult | None]:
        """The steps that open the transfer (``validated`` when given, then
        ``packaged`` and ``transferring`` as the plan needs), to be committed
        before anything is written; and, under ``skip_identical``, the
        result of a destination that is already identical (no copy).

        ``renaming`` (:meth:`renames`): no ``packaged`` step, and no
        comparison up front: the placement compares an existing destination
        with the source's hashes (one read of each side, not two of the
        source), skips an identical one and refuses a different one."""
        assert self.plan is not None
        plan = self.plan
        result: CopyResult | None = None
        if self.spec.conflict == Conflict.SKIP_IDENTICAL and not renaming:
            result = identical_result(self.spec, plan, self.final, ctx=self.ctx)
        packaged = (
            plan.kind == Kind.FOLDER and unit_strategy(self.spec, plan).packaged and not renaming
        )
        steps = [validated] if validated is not None else []
        state = S.VALIDATED if validated is not None else self.state
        if state is S.VALIDATED and packaged and result is None:
            steps.append(Step(S.PACKAGED, details={"files": len(plan.files), "bytes": plan.size}))
            state = S.PACKAGED
        if state in (S.VALIDATED, S.PACKAGED):
            details = {"resume": resume, "skipped": result is not None}
            if renaming:
                details["rename"] = True
            steps.append(Step(S.TRANSFERRING, details=details))
        return steps, result

    def copy_to_temp(self, *, resume: bool) -> CopyResult:
        """The verified copy to the temporary (state ``transferring``)."""
        assert self.plan is not None
        return copy_and_verify(self.spec, self.plan, self.final, self.ctx, resume=resume)

    def resume_copy(self) -> None:
        self.inspect()
        check_mounts(self.spec, self.ctx.expected_devs)
        if self.state in (S.VALIDATED, S.PACKAGED):
            self.to(S.TRANSFERRING, details={"resume": True})
        else:
            self.note("resume", details={"state": self.state.value})
        self.copy(resume=True)

    # -- undo -----------------------------------------------------------------
