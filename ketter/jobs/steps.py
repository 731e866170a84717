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

import contextlib
import os
from typing import TYPE_CHECKING, Any, Literal

from ketter.choices import Conflict, Folders, Kind, Mode, SameFsMove
from ketter.config import RouteConfig
from ketter.engine.beneath import make_dirs, open_dir
from ketter.engine.cleanup import rollback
from ketter.engine.mounts import check_mounts
from ketter.engine.move import (
    delete_source,
    hash_source,
    place_by_rename,
    refuse_open_sources,
    same_filesystem,
)
from ketter.engine.oserrors import classify_oserror
from ketter.engine.paths import join, split, temp_name
from ketter.engine.placement import place
from ketter.engine.results import CopyResult, Placement
from ketter.engine.resume import find_partials
from ketter.engine.source import FileEntry, SourcePlan, inspect_source, scan_tree
from ketter.engine.spec import TransferSpec
from ketter.engine.transfer import copy_and_verify, identical_result
from ketter.engine.unit import unit_strategy
from ketter.errors import DestinationConflict, DestinationFull, PermanentError
from ketter.jobs.claim import Claimed, ensure_claim
from ketter.jobs.create import file_source_key, folder_source_key
from ketter.jobs.lease import JobContext
from ketter.jobs.states import State
from ketter.jobs.transitions import Step, advance
from ketter.paths import readable
from ketter.store.ports.manifests import ManifestFile
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    from ketter.audit.mhl import MHLWritten
    from ketter.jobs.runner import JobRunner
    from ketter.store.port import JobStore

S = State
IN_FLIGHT = (S.VALIDATED.value, S.PACKAGED.value, S.TRANSFERRING.value, S.VERIFYING.value)


class Attempt:
    """One claimed run of a job (see module docstring) on the job store
    ``store``."""

    def __init__(
        self,
        runner: JobRunner,
        job: JobRow,
        claimed: Claimed,
        route: RouteConfig,
        spec: TransferSpec,
        ctx: JobContext,
        *,
        store: JobStore,
    ) -> None:
        self.store = store
        self.runner = runner
        self.job = job
        self.claim = claimed.claim
        self.claimed = claimed
        self.route = route
        self.spec = spec
        self.ctx = ctx
        self.state = State(job.state)
        self.plan: SourcePlan | None = None
        self.source = bytes(job.source_path)
        self.final = self._final_path()

    # -- bookkeeping -------------------------------------------------------

    def now(self) -> float:
        return self.runner.clock()

    def to(
        self,
        new: State,
        *,
        event: str | None = None,
        details: dict | None = None,
        fsync: bool = False,
        **fields: Any,
    ) -> None:
        """One transition (see :func:`ketter.jobs.transitions.transition`)."""
        self.advance([Step(new, event, details, fields)], fsync=fsync)

    def advance(self, steps: list[Step], *, fsync: bool = False) -> None:
        """Several steps in one commit (see :func:`ketter.jobs.transitions.advance`)."""
        self.state = advance(
            self.store,
            self.job.id,
            self.state,
            steps,
            claim=self.claim,
            now=self.now(),
            fsync=fsync,
            route=self.job.route,
            attempt=self.claimed.attempt,
        )

    def note(
        self, event: str, *, details: dict | None = None, fsync: bool = False, **fields: Any
    ) -> None:
        """A step that keeps the state (see :func:`ketter.jobs.transitions.mark`)."""
        self.advance([Step(None, event, details, fields)], fsync=fsync)

    def _final_path(self) -> bytes:
        if self.job.dest_path is not None:
            return bytes(self.job.dest_path)
        root = os.fsencode(self.route.source)
        rel = os.path.relpath(self.source, root)
        if rel.startswith(b".."):
            raise PermanentError(
                f"source {readable(self.source)!r} is not under the route's "
                f"source {self.route.source}"
            )
        return join(os.fsencode(self.route.destination), rel)

    @property
    def dest_dir(self) -> bytes:
        return split(self.final)[0]

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
        # The mount guard holds within one attempt; a share remounted between
        # attempts may have a new device number, which is not an outage.
        self.ctx.expected_devs = check_mounts(self.spec, None)
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

    def renames(self) -> bool:
        """``same_fs_move: rename`` applies to this job: a move whose source and
        destination folder are on the same filesystem and mount (else the
        normal copy). An ``as_unit`` folder is renamed as a whole only when
        the rename delivers exactly what a copy would: not on an ``mhl``
        route (its generation is written into the folder *before* it is
        placed, and writing it into the source would change the source a
        failed rename leaves behind; after the rename, a crash would leave a
        delivered folder without its manifest), nor when the source folder
        holds entries the copy skips (links, FIFOs: they would be delivered
        too)."""
        plan = self.plan
        if (
            plan is None
            or self.spec.mode != Mode.MOVE
            or self.spec.same_fs_move != SameFsMove.RENAME
        ):
            return False
        if plan.kind == Kind.FOLDER and (self.route.mhl or plan.skipped):
            return False
        return same_filesystem(self.source, self.final)

    def hash_in_place(self) -> CopyResult:
        """The source hashed for a rename into place (state ``transferring``,
        progress phase ``hash``): nothing is written. A writer already
        holding the source is refused before the read (looked for again
        right before the rename: :func:`ketter.engine.move.place_by_rename`)."""
        assert self.plan is not None
        refuse_open_sources(self.plan)
        result = hash_source(self.spec, self.plan, self.final, ctx=self.ctx)
        self.ctx.fault("after-hash-before-record")
        return result

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

    def verified(self, result: CopyResult) -> None:
        # Durable before the rename: after a power cut that kept the rename
        # (its folder is fsynced) the job must still know the temporary's
        # inode, or it would not recognise its own delivery under the final
        # name (conflict: fail would then fail it, rename deliver it twice).
        #
        # A rename into place records the source's inode the same way: killed
        # between the rename and the ``place`` commit, drive() finds it under
        # the final name (``recover``) exactly as it finds a copy.
        self.advance([self.verifying(result)], fsync=bool(result.temp_path))
        in_place = bool(result.temp_path) and result.temp_path == result.plan.path
        mhl = None
        if self.route.mhl and result.plan.kind == Kind.FOLDER and result.temp_path and not in_place:
            from ketter.audit.mhl import write_generation  # ascmhl loads only when used

            mhl = write_generation(
                result.temp_path,
                self.source,
                result,
                now=self.now(),
                node=self.runner.config.node,
                root=self.spec.destination_root,
            )
        ensure_claim(self.store, self.job.id, self.claim)
        if in_place:
            self.ctx.fault("after-record-before-rename")
            # Open writers are looked for here, after the hash and the record,
            # right before the rename (SourceInUse: the job waits).
            placement = place_by_rename(self.spec, result, self.ctx)
        else:
            placement = place(self.spec, result, self.ctx)
        if self.spec.mode == Mode.MOVE:
            # Durable before any source is deleted.
            self.advance([self.placed(placement, mhl=mhl)], fsync=True)
            self.ctx.fault("after-place-before-delete")
            self.after_placement(placement)
        else:
            # One durable commit for ``place`` and ``completed``: a crash
            # between the rename and this commit is recovered from the
            # temporary's inode recorded in ``verifying`` (drive()).
            self.after_placement(placement, placed=self.placed(placement, mhl=mhl))

    def verifying(self, result: CopyResult) -> Step:
        """The ``verifying`` step (or ``verify`` note) that records the
        hashes and the temporary's inode; the caller commits it durably
        before the rename (see :meth:`verified`)."""
        # The inode Ketter wrote and verified (fstat of its own descriptor),
        # never an lstat of the temporary's name: that name sits in a folder
        # others may write to, and a swapped impostor's inode recorded here
        # would pass for our delivery at recovery and before a move deletes
        # the source (#14). The same-filesystem rename's is the source's own
        # (the inode hashed, from the plan).
        temp_ino = None
        if result.temp_id is not None:
            temp_ino = result.temp_id[1]
        elif result.temp_path:
            temp_ino = os.lstat(result.temp_path).st_ino
        hashes = result.hashes
        if result.files:
            self.store.record_file_hashes(
                self.job.id, [(fh.relpath, fh.hashes) for fh in result.files]
            )
            hashes = result.package_hashes or {}
        details = {
            "algorithm": result.verify,
            "verified": True,
            "skipped": result.skipped,
            "bytes": result.bytes_copied,
            "resumed_from": result.resumed_from,
            "seconds": round(result.seconds, 3),
            "packaged": result.packaged,
            **{k: v for k, v in result.hashes.items()},
        }
        recorded = {
            "placed_inode": temp_ino,
            "sha256": hashes.get("sha256"),
            "xxh128": hashes.get("xxh128"),
            "xxh64": hashes.get("xxh64"),
            # job_history's seconds and mb_per_s: this attempt's active time,
            # not the waits before it (migration 0005).
            "transfer_seconds": round(result.seconds, 3),
            "transfer_bytes": result.bytes_copied,
        }
        if self.state is S.TRANSFERRING:
            recorded["md5"] = hashes.get("md5")
            recorded["bytes_done"] = result.bytes_copied + result.resumed_from
            return Step(S.VERIFYING, details=details, fields=recorded)
        return Step(None, "verify", details, recorded)

    def placed(self, placement: Placement, *, mhl: MHLWritten | None = None) -> Step:
        """The ``place`` (or ``skip``) note; the caller commits it durably:
        power loss after that commit must not forget the delivery.

        ``mhl``: the ASC MHL generation written into the folder; its formats
        and what it leaves out (names not valid UTF-8, and the ignore
        patterns that name them in the manifest) are in the event, so the
        chain says what the manifest does not cover."""
        self.final = placement.final_path
        event = "skip" if placement.skipped else "place"
        details = {
            "destination": readable(placement.final_path),
            "mode": placement.mode,
            "replaced": placement.replaced,
        }
        if placement.skipped:
            details["reason"] = "identical file already at the destination"
        if mhl is not None:
            details["mhl"] = {
                "generation": readable(split(mhl.path)[1]),
                "formats": list(mhl.formats),
                "computed": list(mhl.computed),
                "left_out": list(mhl.left_out),
                "patterns": list(mhl.patterns),
            }
        return Step(
            None,
            event,
            details,
            {
                "placed_at": self.now(),
                "placed_inode": placement.ino,
                "dest_path": placement.final_path,
                "dest_display": readable(placement.final_path),
            },
        )

    def after_placement(
        self,
        placement: Placement | None = None,
        *,
        placed: Step | None = None,
    ) -> None:
        """The work left after the placement: the source deletion of a move,
        then ``completed`` (committed durably with ``placed``, when given,
        and with the ``delete_source`` note)."""
        self.advance(self.finishing_steps(placement, placed=placed), fsync=True)

    def finishing_steps(
        self, placement: Placement | None = None, *, placed: Step | None = None
    ) -> list[Step]:
        """:meth:`after_placement` up to its commit: deletes the source of a
        move and returns the steps to commit (``placed`` when given, the
        ``delete_source`` note, ``completed``). A batch commits several
        jobs' steps together."""
        job = self.store.get_job(self.job.id)
        if placement is None:
            final = bytes(job.dest_path or self.final)
            st = os.lstat(final) if os.path.lexists(final) else None
            placement = Placement(
                final, job.placed_inode or 0, st.st_dev if st else 0, False, "recorded"
            )
        steps = [placed] if placed is not None else []
        if self.spec.mode == Mode.MOVE:
            plan = self.plan or self._plan_from_row(job)
            ensure_claim(self.store, self.job.id, self.claim)
            result = delete_source(self.spec, plan, placement, self.ctx)
            # Recorded with ``completed``: a crash before this commit runs the
            # deletion again, which finds the sources gone ("already_gone").
            steps.append(
                Step(
                    None,
                    "delete_source",
                    {
                        "source": readable(self.source),
                        "deleted": len(result.deleted),
                        "already_gone": len(result.already_gone),
                        "kept_changed": [readable(p) for p in result.kept],
                        "marker": self.spec.ready_marker,
                    },
                )
            )
        steps.append(
            Step(
                S.COMPLETED,
                details={
                    "destination": readable(placement.final_path),
                    "size": job.size,
                    "sha256": job.sha256,
                    "xxh128": job.xxh128,
                    "files": job.file_count,
                },
                fields={
                    "completed_at": self.now(),
                    "error": None,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "bytes_done": job.size,
                },
            )
        )
        return steps

    def _plan_from_row(self, job: JobRow) -> SourcePlan:
        files = tuple(
            FileEntry(f.relpath, f.size, f.mtime_ns, f.mode, f.inode or 0, f.ctime_ns or 0)
            for f in self.store.manifest(job.id)
        )
        dirs: tuple[FileEntry, ...] = ()
        if job.kind == Kind.FOLDER and os.path.isdir(self.source):
            dirs = tuple(scan_tree(self.source)[1])
        kind: Literal["file", "folder"] = "folder" if job.kind == Kind.FOLDER else "file"
        return SourcePlan(
            path=self.source,
            kind=kind,
            size=job.size,
            mtime_ns=job.source_mtime_ns or 0,
            ino=job.source_inode or 0,
            dev=job.source_dev or 0,
            mode=0,
            files=files,
            dirs=dirs,
            ctime_ns=job.source_ctime_ns or 0,
        )

    def _own_copy_in_place(self) -> bytes | None:
        """Killed between the rename and its record: the final name that holds
        our inode (under ``conflict: rename`` it may be ``name (1).ext``)."""
        inode = self.job.placed_inode
        if inode is None:
            return None
        # The folder reached from the route root without following a link,
        # and the inode matched with the folder's device: a link swapped in
        # for the folder (or a same-numbered inode on another filesystem)
        # must not pass for the delivery (#14 finding 1).
        try:
            dfd = open_dir(self.spec.destination_root or self.dest_dir, self.dest_dir)
        except (OSError, PermanentError):
            return None
        try:
            dev = os.fstat(dfd).st_dev
            name = split(self.final)[1]
            with contextlib.suppress(OSError):
                st = os.lstat(name, dir_fd=dfd)
                if (st.st_ino, st.st_dev) == (inode, dev):
                    return self.final
            for entry in os.listdir(dfd):
                ename = os.fsencode(entry)
                if ename.startswith(b".ketter-"):
                    continue
                with contextlib.suppress(OSError):
                    st = os.lstat(ename, dir_fd=dfd)
                    if (st.st_ino, st.st_dev) == (inode, dev):
                        return join(self.dest_dir, ename)
        except OSError:
            return None
        finally:
            os.close(dfd)
        return None

    def kept_bytes(self) -> int:
        """What a stop leaves for the next claim: the job's size once placed,
        else the bytes of its largest partial (0 when none is kept: a folder
        or a small file starts again)."""
        if self.job.placed_at is not None or self.state is S.VERIFYING:
            return self.job.size
        parent, name = split(self.final)
        out = join(parent, temp_name(self.ctx.tag, name, "part"))
        sizes = [0]
        for partial in find_partials(out, name, self.ctx):
            try:
                sizes.append(os.lstat(partial).st_size)
            except OSError:
                continue
        return max(sizes)

    def _resumable_partial(self) -> bool:
        parent, name = split(self.final)
        out = join(parent, temp_name(self.ctx.tag, name, "part"))
        for partial in find_partials(out, name, self.ctx):
            try:
                if os.lstat(partial).st_size >= max(self.spec.resume_min_bytes, 1):
                    return True
            except OSError:
                continue
        return False

    # -- undo -----------------------------------------------------------------

    def finish_rollback(self, delay: float | None = None, *, keep_lease: bool = False) -> None:
        """Idempotent undo: every temporary of this job, any claim; never a source.

        ``keep_lease``: this attempt goes on right after the undo (recovery of
        an interrupted job), so the job stays ours instead of being released.
        """
        self.ctx.fault("mid-rollback")
        # Reached from the route's root: never rolled back through a link (#14 finding 1).
        removed = rollback(self.dest_dir, self.ctx.job_prefix, root=self.spec.destination_root)
        job = self.store.get_job(self.job.id)
        target = State(job.rollback_to or S.FAILED.value)
        details = {"removed": [readable(p) for p in removed]}
        if target is S.RETRY_WAIT:
            if delay is None:
                delay = self.runner.backoff(job.attempt)
            lease: dict[str, Any] = (
                {} if keep_lease else {"lease_owner": None, "lease_expires_at": None}
            )
            self.to(
                S.RETRY_WAIT,
                next_attempt_at=self.now() + delay,
                rollback_to=None,
                details={**details, "delay_s": round(delay, 3)},
                **lease,
            )
            if delay > 0 and not keep_lease:
                self.runner.ring_later(self.job.id, delay)
        elif target is S.SUPERSEDED:
            # Quiet on purpose: the version is gone and its successor is a
            # job of its own (#14 finding 14); no job_failed alert.
            self.to(
                S.SUPERSEDED,
                event="supersede",
                rollback_to=None,
                lease_owner=None,
                lease_expires_at=None,
                completed_at=self.now(),
                details={**details, "reason": job.error},
            )
        else:
            self._fail(job, {**details, "error": job.error}, job.error or "failed")

    def _fail(self, job: JobRow, details: dict[str, Any], message: str) -> None:
        """``failed`` for good: the lease let go, the failure alerted."""
        self.to(
            S.FAILED,
            rollback_to=None,
            lease_owner=None,
            lease_expires_at=None,
            completed_at=self.now(),
            details=details,
        )  # its fail event alerts job_failed (ketter.events.AlertSubscriber)
