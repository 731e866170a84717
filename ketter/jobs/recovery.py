"""Recovery of an attempt that was interrupted (killed between the rename
and its record, a partial worth resuming) and rollback of one that cannot
go on."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from ketter.engine.beneath import open_dir
from ketter.engine.cleanup import rollback
from ketter.engine.paths import join, split, temp_name
from ketter.engine.resume import find_partials
from ketter.errors import PermanentError
from ketter.jobs.attempt_base import AttemptBase
from ketter.jobs.states import State
from ketter.paths import readable
from ketter.store.rows import JobRow

if TYPE_CHECKING:
    pass

S = State
IN_FLIGHT = (S.VALIDATED.value, S.PACKAGED.value, S.TRANSFERRING.value, S.VERIFYING.value)


class Recovery(AttemptBase):
    """What an attempt finds left by an earlier one, and its undo."""

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
