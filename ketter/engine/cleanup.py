"""Removing temporaries: rollback of one job, and the orphan sweep.

Both only ever touch names that start with ``.ketter-`` in a destination;
sources are never touched. Both are idempotent, because the process doing
them can itself be killed half-way (fault point ``mid-rollback``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Callable

from .context import env_fault
from .hashing import fsync_dir
from .paths import TEMP_PREFIX, join

PROBE_PREFIX = b".ketter-probe-"


def remove_path(path: bytes) -> None:
    """Remove a file or a whole folder; missing is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        # A copied read-only folder cannot be emptied until it is writable.
        # Links are removed as links, never followed: ``os.walk`` lists a
        # link to a folder among the folders, and ``chmod(follow_symlinks=
        # False)`` of it raised NotImplementedError on Linux (issue #14
        # finding 13: an overwrite over a link to a folder failed).
        for root, dirs, _files in os.walk(path):
            for d in dirs:
                _make_writable(join(root, d))
        _make_writable(path)
        shutil.rmtree(path, ignore_errors=False, onerror=_missing_ok)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _make_writable(path: bytes) -> None:
    """chmod 0700 a real folder through a descriptor opened without
    following a link; a link (or anything gone or odd) is left alone."""
    # O_PATH: a folder without read permission (mode 000) still opens;
    # chmod goes through the descriptor's /proc entry, which names the
    # opened inode itself, not a path that could be swapped meanwhile.
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
    finally:
        os.close(fd)


def _missing_ok(func: object, path: object, exc_info: object) -> None:
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if not isinstance(exc, FileNotFoundError):
        raise exc  # type: ignore[misc]


def _restore_old(dest_dir: bytes, old_dir: bytes) -> None:
    """Put a set-aside version back unless its name is taken again.

    If the final name exists, the new version was placed (the crash hit
    after the rename): the job only moves forward, so the old one goes.
    """
    from .placement import renameat2_noreplace  # placement imports this module

    for name in os.listdir(old_dir):
        try:
            renameat2_noreplace(join(old_dir, name), join(dest_dir, name))
        except FileExistsError:
            remove_path(join(old_dir, name))
        except OSError:
            if not os.path.lexists(join(dest_dir, name)):
                os.rename(join(old_dir, name), join(dest_dir, name))
            else:
                remove_path(join(old_dir, name))
    os.rmdir(old_dir)


def rollback(
    dest_dir: bytes, tag_or_job_prefix: str, fault: Callable[[str], None] = env_fault
) -> list[bytes]:
    """Remove this job's temporaries in ``dest_dir``; restore set-aside versions.

    ``tag_or_job_prefix`` is a context's ``tag`` (one claim) or its
    ``job_prefix`` (every claim of the job). Returns the names handled.
    """
    key = tag_or_job_prefix.encode()
    prefix = key if key.startswith(TEMP_PREFIX) else TEMP_PREFIX + key + b"-"
    handled: list[bytes] = []
    try:
        entries = os.listdir(dest_dir)
    except FileNotFoundError:
        return []
    for name in sorted(entries):
        if not name.startswith(prefix):
            continue
        path = join(dest_dir, name)
        if handled:
            fault("mid-rollback")
        if name.endswith(b".old") and os.path.isdir(path):
            _restore_old(dest_dir, path)
        else:
            remove_path(path)
        handled.append(path)
    if handled:
        fsync_dir(dest_dir)
    return handled


def temp_job_id(name: bytes) -> str | None:
    """Job id of a ``.ketter-<job>-<claim>-<name>.<kind>`` temporary."""
    if not name.startswith(TEMP_PREFIX) or name.startswith(PROBE_PREFIX):
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
    unless ``remove=False``); stale placement probes go too."""
    found: list[bytes] = []
    now = time.time()
    for root, dirs, files in os.walk(dest_root):
        for name in [*dirs, *files]:
            if not name.startswith(TEMP_PREFIX):
                continue
            path = join(root, name)
            if name.startswith(PROBE_PREFIX):
                try:
                    if now - os.lstat(path).st_mtime > probe_age:
                        found.append(path)
                        if remove:
                            remove_path(path)
                except FileNotFoundError:
                    pass
                continue
            job = temp_job_id(name)
            if job is None or is_active(job):
                continue
            found.append(path)
            if remove:
                rollback(
                    root,
                    TEMP_PREFIX.decode()
                    + name[len(TEMP_PREFIX) :].split(b"-", 1)[0].decode("ascii", "replace")
                    + "-",
                )
        dirs[:] = [d for d in dirs if not d.startswith(TEMP_PREFIX)]
    return found
