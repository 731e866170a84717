"""Recovery of an attempt that was interrupted (killed between the rename
and its record, a partial worth resuming) and rollback of one that cannot
go on."""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING, Any

from ketter.choices import Kind
from ketter.engine.beneath import open_below, open_dir
from ketter.engine.cleanup import rollback
from ketter.engine.openfile import sha256_of_file
from ketter.engine.paths import join, rename_candidate, split, temp_name
from ketter.engine.resume import find_partials
from ketter.errors import PermanentError
from ketter.jobs.attempt_base import AttemptBase
from ketter.jobs.states import State
from ketter.mounts import inodes_kept
from ketter.paths import readable
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    pass

S = State
IN_FLIGHT = (S.VALIDATED.value, S.PACKAGED.value, S.TRANSFERRING.value, S.VERIFYING.value)
_NUMBER = re.compile(rb" \(([1-9][0-9]{0,3})\)")


def _renamed(name: bytes, folder: bool, entry: bytes) -> bool:
    """``entry`` is a name ``conflict: rename`` could have given ``name``
    (:func:`~ketter.engine.paths.rename_candidate`: ``name (n).ext``)."""
    return any(
        rename_candidate(name, int(m.group(1)), folder) == entry for m in _NUMBER.finditer(entry)
    )


class Recovery(AttemptBase):
    """What an attempt finds left by an earlier one, and its undo."""

    def _own_copy_in_place(self) -> bytes | None:
        """Killed between the rename and its record: the final name that holds
        our delivery (under ``conflict: rename`` it may be ``name (1).ext``).

        Recognised by its inode where the destination's filesystem keeps
        inode numbers. sshfs and smbnetfs hand out new ones after a remount
        or a reconnect (:func:`ketter.mounts.inodes_kept`): there the
        delivery is recognised by its size and the checksum recorded when it
        was verified, each file of a folder by its manifest's (#15 §1);
        before, such a job copied again and failed on its own delivery
        (``conflict: fail``) or delivered it twice (``rename``)."""
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
            by_inode = inodes_kept(dev)
            name = split(self.final)[1]

            def ours(ename: bytes) -> bool:
                try:
                    st = os.lstat(ename, dir_fd=dfd)
                except OSError:
                    return False
                if by_inode:
                    return (st.st_ino, st.st_dev) == (inode, dev)
                return self._verified_content(dfd, ename, st)

            if ours(name):
                return self.final
            folder = self.job.kind == Kind.FOLDER
            for entry in os.listdir(dfd):
                ename = os.fsencode(entry)
                if ename == name or ename.startswith(b".ketter-"):
                    continue
                # Without inodes only the names the rename policy gives are
                # hashed: a folder of same-sized frames is not read whole.
                if (by_inode or _renamed(name, folder, ename)) and ours(ename):
                    return join(self.dest_dir, ename)
        except OSError:
            return None
        finally:
            os.close(dfd)
        return None

    def _verified_content(self, dfd: int, name: bytes, st: os.stat_result) -> bool:
        """``name`` in the folder ``dfd`` holds what this job verified: a
        file of the job's size whose SHA-256 is the recorded one, or a folder
        holding every file of the job's manifest with its size and SHA-256
        (reached without following a link)."""
        if self.job.kind != Kind.FOLDER:
            return (
                stat.S_ISREG(st.st_mode)
                and st.st_size == self.job.size
                and self.job.sha256 is not None
                and sha256_of_file(name, dir_fd=dfd) == self.job.sha256
            )
        files = self.store.manifest(self.job.id)
        if not stat.S_ISDIR(st.st_mode) or not files or any(f.sha256 is None for f in files):
            return False
        top = open_below(dfd, name, join(self.dest_dir, name))
        try:
            for f in files:
                parent, _, base = f.relpath.rpartition(b"/")
                pfd = open_below(top, parent, join(self.dest_dir, name))
                try:
                    if os.lstat(base, dir_fd=pfd).st_size != f.size:
                        return False
                    if sha256_of_file(base, dir_fd=pfd) != f.sha256:
                        return False
                finally:
                    os.close(pfd)
        except (OSError, PermanentError):
            return False
        finally:
            os.close(top)
        return True

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
        if job.cancel_requested_at is not None and not keep_lease and target is not S.SUPERSEDED:
            # Cancelled meanwhile (or a rollback a crash interrupted): the undo
            # ends it as asked. With ``keep_lease`` the attempt goes on and
            # its next step forward is refused (JobCancelled) instead.
            target = S.CANCELLED
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
        elif target is S.CANCELLED:
            # Quiet too: an operator asked for it; no retry, no alert.
            self.to(
                S.CANCELLED,
                event="cancel",
                rollback_to=None,
                lease_owner=None,
                lease_expires_at=None,
                completed_at=self.now(),
                details={**details, "by": job.cancel_requested_by},
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
