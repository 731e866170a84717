"""Turn an ``OSError`` into the Ketter error that says what to do next.

Transient errors are retried after a backoff; :class:`RouteUnavailable` pauses
the whole route without spending the job's attempts (R-J7: a full or vanished
share is the route's problem, not the job's); permanent errors fail the job
now because a retry would hit the same wall.

``EROFS`` is a route pause (:class:`RouteNotWritable`) whose reason says
which of two causes it is. Under systemd the units make the whole tree
read-only (``ProtectSystem=strict``) except the route folders that existed
when the service started (``ReadWritePaths=-…``, a missing one skipped): a
destination folder created later is a read-only *bind mount* of a writable
filesystem, and only re-rendering the units and restarting fixes it. It used
to fail the job for good while ``health`` stayed healthy (issue #15). A
filesystem mounted read-only (a share that went read-only after an error)
is the other cause: remount it and the route resumes. The mount table of
this process tells them apart (its mount options against its superblock's).
"""

from __future__ import annotations

import errno
import os
import re

from ketter.errors import (
    DestinationFull,
    KetterError,
    PermanentError,
    RouteNotWritable,
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
    # EIO is what a FUSE or network share answers while its server is down
    # (smbnetfs, sshfs: a real server restart used up the copy route's
    # attempts and failed the job, issue #15 §1), or a flaky local disk. It
    # is a route error: the policy looks at the route from outside, pauses
    # it while its folders do not answer, and takes the error for the job's
    # own transient one when they do (a bad sector that keeps failing still
    # ends the job after its attempts).
    errno.EIO: (
        RouteUnavailable,
        "input/output error",
        "check the disk or share (dmesg): the route pauses while it does not answer, "
        "else the job is retried",
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
    # EROFS is special-cased in classify_oserror (sandbox or mount): a route
    # pause either way, no longer a failed job (issue #15).
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
    if code == errno.EROFS:
        return RouteNotWritable(f"cannot {action} {shown}: {_read_only_reason(path)}")
    cls, cause, fix = _TABLE.get(
        code, (TransientError, exc.strerror or "unexpected error", "the job is retried")
    )
    name = errno.errorcode.get(code, str(code))
    return cls(f"cannot {action} {shown}: {cause} ({name}); {fix}")


#: The reason of an EROFS under the sandbox (health and status show it).
SANDBOX_REASON = (
    "not writable under the unit's sandbox: re-render the units "
    "(`ketter deploy units --out /etc/systemd/system`), then `systemctl daemon-reload` "
    "and `systemctl restart ketter.target` (a route folder created after the start "
    "is read-only in the service); the route is paused until then (EROFS)"
)
#: The reason of an EROFS on a filesystem mounted read-only.
MOUNT_REASON = (
    "read-only filesystem (EROFS): remount it read-write; the route is paused and resumes by itself"
)

_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape(field: bytes) -> bytes:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \ooo.
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def _mount_options(path: bytes, mountinfo: str) -> tuple[set[bytes], set[bytes]] | None:
    """The mount options and the superblock options of the mount ``path``
    is on, from the mount table (no call on the maybe dead mount itself);
    None when the table cannot be read."""
    try:
        with open(mountinfo, "rb") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    target = os.path.abspath(path)
    best: tuple[bytes, bytes, bytes] | None = None
    for line in lines:
        fields = line.split(b" ")
        if b"-" not in fields[6:]:
            continue
        sep = fields.index(b"-", 6)
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip(b"/") + b"/")
        # Longest mount point wins; of equal ones the later line (mounted on top).
        if inside and (best is None or len(point) >= len(best[0])):
            super_options = fields[sep + 3] if len(fields) > sep + 3 else b""
            best = (point, fields[5], super_options)
    if best is None:
        return None
    return set(best[1].split(b",")), set(best[2].split(b","))


def read_only_reason(path: bytes, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Why ``path`` cannot be written by this process, from the mount table:
    :data:`SANDBOX_REASON` for a read-only mount of a writable filesystem (a
    read-only bind mount: what ``ProtectSystem=strict`` makes of a folder
    outside ``ReadWritePaths=``), :data:`MOUNT_REASON` for a filesystem
    mounted read-only; None when its mount is writable (or the table cannot
    be read). Cheap enough for the sweep's look at a paused route."""
    options = _mount_options(path, mountinfo)
    if options is None or b"ro" not in options[0]:
        return None
    return MOUNT_REASON if b"ro" in options[1] else SANDBOX_REASON


def _read_only_reason(path: bytes) -> str:
    # EROFS happened: a mount table that does not say why is a read-only mount.
    return read_only_reason(path) or MOUNT_REASON
