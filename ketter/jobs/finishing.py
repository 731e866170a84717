"""The end of an attempt: the verified copy recorded, placed and, on a move,
its source deleted, then ``completed`` (or, with ``same_fs_move: rename``,
the source hashed and renamed into place). The placement (``placed_at``) is
the point of no return: after it the job only moves forward."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from ketter.choices import Kind, Mode, SameFsMove
from ketter.engine.move import (
    delete_source,
    hash_source,
    place_by_rename,
    refuse_open_sources,
    same_filesystem,
)
from ketter.engine.paths import split
from ketter.engine.placement import place
from ketter.engine.results import CopyResult, Placement
from ketter.engine.source import FileEntry, SourcePlan, scan_tree
from ketter.jobs.attempt_base import AttemptBase
from ketter.jobs.claim import ensure_claim
from ketter.jobs.states import State
from ketter.jobs.transitions import Step
from ketter.paths import readable
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    from ketter.audit.mhl import MHLWritten

S = State
IN_FLIGHT = (S.VALIDATED.value, S.PACKAGED.value, S.TRANSFERRING.value, S.VERIFYING.value)


class Finishing(AttemptBase):
    """The placement steps of an attempt and the work after them."""

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
            **({"copy_path": result.copy_path} if result.copy_path else {}),
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
        # A copy placed just now: its row as this attempt's steps wrote it (a
        # read per file spared). A recorded placement (recovery) and a move
        # (the checksum that allows the source's deletion) read the store.
        if placement is not None and self.spec.mode != Mode.MOVE:
            job = self.written_row()
        else:
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
            result = delete_source(
                self.spec, plan, placement, self.ctx, self._verified_sha256(job, plan)
            )
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
                    # The verified attempt's copy and read-back time: with
                    # size and files, what the route's counters add up.
                    "seconds": job.transfer_seconds,
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

    def _verified_sha256(self, job: JobRow, plan: SourcePlan) -> dict[bytes, str]:
        """The SHA-256 recorded at verification per source file (a folder's
        from its manifest, a file's under its name): what a source whose
        ctime alone changed since is compared with before it is deleted."""
        if plan.kind == Kind.FILE:
            return {plan.name: job.sha256} if job.sha256 else {}
        return {f.relpath: f.sha256 for f in self.store.manifest(job.id) if f.sha256}

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
