"""Turn an ``OSError`` into the Ketter error that says what to do next.

Transient errors are retried after a backoff; :class:`RouteUnavailable` pauses
the whole route without spending the job's attempts (R-J7: a full or vanished
share is the route's problem, not the job's); permanent errors fail the job
now because a retry would hit the same wall.
"""

from __future__ import annotations

import errno

from ketter.errors import (
    DestinationFull,
    KetterError,
    PermanentError,
    RouteUnavailable,
    SourceChanged,
    TransientError,
)

from .paths import show

#: errno -> (class, cause, how to fix). The source-side ENOENT is special-cased.
_TABLE: dict[int, tuple[type[KetterError], str, str]] = {
    # "Does not fit" is the route's problem, not the job's (R-J7): the route
    # waits for room without using attempts; it used to fail the job for good
    # after a few quick retries (issue #14, finding 17).
    errno.ENOSPC: (
        DestinationFull,
        "no space left on the device",
        "free space on the destination; the route resumes by itself",
    ),
    errno.EDQUOT: (
        DestinationFull,
        "disk quota exceeded",
        "raise the quota or free space; the route resumes by itself",
    ),
    # EIO is usually a flaky disk or a network share hiccup; a bad sector
    # that keeps failing shows up as repeated attempts and ends the job.
    errno.EIO: (
        TransientError,
        "input/output error",
        "check the disk or share (dmesg); the job is retried",
    ),
    errno.ESTALE: (
        RouteUnavailable,
        "stale network file handle (share remounted?)",
        "check the share mount; the route resumes when it is back",
    ),
    errno.ENOTCONN: (
        RouteUnavailable,
        "share not connected",
        "check the share mount; the route resumes when it is back",
    ),
    errno.EHOSTDOWN: (
        RouteUnavailable,
        "file server is down",
        "check the file server; the route resumes when it is back",
    ),
    errno.ETIMEDOUT: (
        RouteUnavailable,
        "file server timed out",
        "check the network path to the share",
    ),
    errno.ENOENT: (
        TransientError,
        "no such file or folder",
        "check that the folder exists (and the share is mounted)",
    ),
    # Permissions do not fix themselves: failing now and re-queueing after
    # the operator fixes the ACL beats burning retries for hours.
    errno.EACCES: (
        PermanentError,
        "permission denied",
        "give the Ketter service user access, then re-queue the job",
    ),
    errno.EPERM: (
        PermanentError,
        "operation not permitted",
        "give the Ketter service user access, then re-queue the job",
    ),
    errno.ENAMETOOLONG: (
        PermanentError,
        "name too long for the destination filesystem",
        "shorten the name at the source",
    ),
    # Debatable: a share can go read-only after an error and come back, but
    # a read-only route is far more often a mount option; failing loudly gets
    # a human to look, and re-queueing is one command.
    errno.EROFS: (
        PermanentError,
        "read-only filesystem",
        "remount the destination read-write, then re-queue the job",
    ),
    errno.EEXIST: (
        TransientError,
        "the name already exists",
        "another writer used the same name; the job is retried",
    ),
    errno.EMFILE: (TransientError, "too many open files", "raise LimitNOFILE"),
}


def classify_oserror(exc: OSError, path: bytes, action: str) -> KetterError:
    """A Ketter error for ``exc`` raised while doing ``action`` on ``path``.

    ``action`` reads as a verb phrase ("read the source", "write the
    temporary file"); when it mentions the source, ENOENT means the source
    vanished, which is :class:`SourceChanged` (retried once it is stable).
    Use as ``raise classify_oserror(e, path, "…") from e``.
    """
    code = exc.errno if exc.errno is not None else -1
    shown = show(path)
    if code == errno.ENOENT and "source" in action:
        return SourceChanged(
            f"cannot {action} {shown}: the source vanished during the transfer (ENOENT); "
            "it is transferred again if it comes back"
        )
    cls, cause, fix = _TABLE.get(
        code, (TransientError, exc.strerror or "unexpected error", "the job is retried")
    )
    name = errno.errorcode.get(code, str(code))
    return cls(f"cannot {action} {shown}: {cause} ({name}); {fix}")
