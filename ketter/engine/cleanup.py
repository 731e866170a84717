"""Removing temporaries: rollback of one job, and the orphan sweep.

Both only ever touch names that start with ``.ketter-`` in a destination;
sources are never touched. Both are idempotent, because the process doing
them can itself be killed half-way (fault point ``mid-rollback``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable

from ketter.errors import DestinationLinkError, PathOutsideRoute

from .beneath import open_dir
from .context import env_fault
from .paths import SHARE_MARKER_PREFIX, TEMP_PREFIX, join, show, split
from .renameat import renameat2_noreplace

PROBE_PREFIX = b".ketter-probe-"
log = logging.getLogger(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)


def remove_path(path: bytes) -> None:
    """Remove a file or a whole folder; missing is fine. Nothing below
    ``path``'s folder is followed: a link is removed as the link (issue #14
    finding 13), and the folders are emptied relative to descriptors opened
    with ``O_NOFOLLOW`` (:func:`remove_at`)."""
    parent, name = split(path)
    try:
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_at(pfd, name)
    finally:
        os.close(pfd)


def remove_at(dir_fd: int, name: bytes) -> None:
    """Remove ``name`` in the folder ``dir_fd`` (a file, a link as the link,
    or a whole folder) without ever following a link; missing is fine.

    A path-based walk (``os.walk`` + ``chmod``) would follow a folder swapped
    for a link half-way and change modes or delete files outside the
    destination (#14 finding 1): every step here is relative to a descriptor.
    """
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    # A copied read-only folder cannot be emptied until it is writable.
    _make_tree_writable(dir_fd, name)
    # shutil.rmtree(dir_fd=) walks with openat and checks each folder it
    # enters is the one it lstat'ed: it never follows a link.
    shutil.rmtree(name, dir_fd=dir_fd, onerror=_missing_ok)


def _make_tree_writable(dir_fd: int, name: bytes) -> None:
    """chmod 0700 the real folder ``name`` and every real folder below it,
    each through a descriptor opened without following a link."""
    # O_PATH: a folder without read permission (mode 000) still opens;
    # chmod goes through the descriptor's /proc entry, which names the
    # opened inode itself, not a path that could be swapped meanwhile
    # (fchmod refuses O_PATH descriptors; fchmodat(AT_SYMLINK_NOFOLLOW)
    # raises NotImplementedError on Linux).
    try:
        pfd = os.open(
            name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError:
        return  # a link, gone, or not a folder: left alone
    try:
        with contextlib.suppress(OSError):
            os.chmod(f"/proc/self/fd/{pfd}", 0o700)
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
    finally:
        os.close(pfd)
    try:
        with os.scandir(fd) as entries:
            subs = [os.fsencode(e.name) for e in entries if e.is_dir(follow_symlinks=False)]
        for sub in subs:
            _make_tree_writable(fd, sub)
    except OSError:
        pass
    finally:
        os.close(fd)


def _missing_ok(func: object, path: object, exc_info: object) -> None:
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if not isinstance(exc, FileNotFoundError):
        raise exc  # type: ignore[misc]


def _refuse_link(dir_fd: int, name: bytes, where: bytes) -> None:
    """A link under a Ketter temporary's name is never Ketter's: its target
    is not touched; the link itself is removed (it would be found again at
    every sweep) and the event logged for the operator."""
    log.warning(
        "a symbolic link named like a Ketter temporary was removed, its target "
        "left untouched: %s; someone planted it in the destination",
        show(join(where, name)),
        extra={"ketter.path": show(join(where, name))},
    )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _restore_old(dest_fd: int, old_name: bytes, where: bytes) -> None:
    """Put a set-aside version back unless its name is taken again.

    If the final name exists, the new version was placed (the crash hit
    after the rename): the job only moves forward, so the old one goes.
    All relative to descriptors: the ``.old`` folder is opened with
    ``O_NOFOLLOW`` (a planted ``.old`` link is never listed or emptied),
    and nothing is deleted when a rename fails for any other reason than
    "the name is taken" (EXDEV, EIO...): the version stays for a person.
    """
    try:
        ofd = os.open(old_name, _DIR, dir_fd=dest_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            _refuse_link(dest_fd, old_name, where)
            return
        raise
    try:
        for entry in os.listdir(ofd):
            name = os.fsencode(entry)
            try:
                renameat2_noreplace(name, name, ofd, dest_fd)
            except FileExistsError:
                remove_at(ofd, name)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    remove_at(ofd, name)
                elif exc.errno in _UNSUPPORTED:  # NFS: check, then rename
                    try:
                        os.lstat(name, dir_fd=dest_fd)
                    except FileNotFoundError:
                        os.rename(name, name, src_dir_fd=ofd, dst_dir_fd=dest_fd)
                    else:
                        remove_at(ofd, name)
                else:
                    raise
    finally:
        os.close(ofd)
    os.rmdir(old_name, dir_fd=dest_fd)


def rollback(
    dest_dir: bytes,
    tag_or_job_prefix: str,
    fault: Callable[[str], None] = env_fault,
    *,
    root: bytes | None = None,
) -> list[bytes]:
    """Remove this job's temporaries in ``dest_dir``; restore set-aside versions.

    ``tag_or_job_prefix`` is a context's ``tag`` (one claim) or its
    ``job_prefix`` (every claim of the job). Returns the names handled.
    ``root``: the route's destination root; ``dest_dir`` is then reached
    from it without following a link (a folder swapped for a link is not
    rolled back through the link: its temporaries, if any, stay in the
    real folder for the orphan sweep).
    """
    try:
        if root is not None:
            dfd = open_dir(root, dest_dir)
        else:
            dfd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except (DestinationLinkError, PathOutsideRoute) as exc:
        log.warning("rollback skipped: %s", exc, extra={"ketter.path": show(dest_dir)})
        return []
    try:
        return rollback_at(dfd, dest_dir, tag_or_job_prefix, fault)
    finally:
        os.close(dfd)


def rollback_at(
    dfd: int,
    where: bytes,
    tag_or_job_prefix: str,
    fault: Callable[[str], None] = env_fault,
) -> list[bytes]:
    """:func:`rollback` in the folder descriptor ``dfd`` (shown as ``where``)."""
    key = tag_or_job_prefix.encode()
    prefix = key if key.startswith(TEMP_PREFIX) else TEMP_PREFIX + key + b"-"
    handled: list[bytes] = []
    for name in sorted(os.fsencode(n) for n in _list_fresh(dfd)):
        if not name.startswith(prefix):
            continue
        if handled:
            fault("mid-rollback")
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            _refuse_link(dfd, name, where)
        elif name.endswith(b".old") and stat.S_ISDIR(st.st_mode):
            _restore_old(dfd, name, where)
        else:
            remove_at(dfd, name)
        handled.append(join(where, name))
    if handled:
        os.fsync(dfd)
    return handled


def _list_fresh(dfd: int) -> list[str]:
    """The names in the folder ``dfd``, through a descriptor of its own.

    ``os.listdir(fd)`` rewinds the descriptor's directory stream, and
    smbnetfs cannot rewind one that was read already (the orphan sweep's
    ``fwalk`` had): the second listing came back empty and a real share's
    orphan temporaries were never removed (issue #15 §1).
    """
    fresh = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
    try:
        return os.listdir(fresh)
    finally:
        os.close(fresh)


def temp_job_id(name: bytes) -> str | None:
    """Job id of a ``.ketter-<job>-<claim>-<name>.<kind>`` temporary."""
    if not name.startswith(TEMP_PREFIX) or name.startswith((PROBE_PREFIX, SHARE_MARKER_PREFIX)):
        return None
    job = name[len(TEMP_PREFIX) :].split(b"-", 1)[0]
    return job.decode("ascii", "replace") or None


def find_orphans(
    dest_root: bytes,
    is_active: Callable[[str], bool],
    *,
    remove: bool = True,
    probe_age: float = 3600.0,
) -> list[bytes]:
    """Temporaries below ``dest_root`` whose job is not active (removed
    unless ``remove=False``); stale placement probes go too.

    The walk is ``os.fwalk``: every folder is entered by descriptor and
    never through a link, and each temporary is handled relative to its
    folder's descriptor (a planted ``.ketter-…`` link is removed as a link,
    its target never listed, emptied or deleted: #14 finding 1).
    """
    found: list[bytes] = []
    now = time.time()
    for root, dirs, files, dfd in os.fwalk(dest_root):
        jobs: list[str] = []
        for name in [*dirs, *files]:
            if not name.startswith(TEMP_PREFIX):
                continue
            path = join(root, name)
            if name.startswith(PROBE_PREFIX):
                try:
                    if now - os.lstat(name, dir_fd=dfd).st_mtime > probe_age:
                        found.append(path)
                        if remove:
                            remove_at(dfd, name)
                except FileNotFoundError:
                    pass
                continue
            job = temp_job_id(name)
            if job is None or is_active(job):
                continue
            found.append(path)
            if job not in jobs:
                jobs.append(job)
        if remove:
            for job in jobs:
                rollback_at(dfd, root, TEMP_PREFIX.decode() + job + "-")
        dirs[:] = [d for d in dirs if not d.startswith(TEMP_PREFIX)]
    return found
