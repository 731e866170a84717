"""Removing the folders a per-file move emptied (docs/configuration.md, mode).

A per-file move route deletes one source file per job; without this its
subfolders stay behind, empty, forever (issue #14 finding 14). After a
deletion the parent folders are removed bottom-up while they are empty, up
to but never including the route's source root.

Each folder is reached from the root with ``openat(O_NOFOLLOW|O_DIRECTORY)``
and removed with ``rmdir`` relative to its parent's descriptor, so a symlink
planted anywhere between the root and the file is never followed (the walk
stops there and nothing is removed). ``rmdir`` is atomic: a folder a writer
or the watcher has just put something into fails with ``ENOTEMPTY`` and is
left alone, as is everything above it. A folder that cannot be removed for
any other reason (permissions, a read-only share) is reported and left: the
file itself was moved, which is what counts.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from .paths import show

#: rmdir answers that mean "someone else has it or it is gone": stop quietly.
_LEAVE = (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY, errno.ENOTDIR)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _components(path: bytes, root: bytes) -> list[bytes] | None:
    """The folder names from ``root`` down to ``path``'s parent, or ``None``
    when ``path`` is not textually inside ``root``."""
    return _folder_parts(os.path.dirname(os.path.normpath(path)), root)


def _folder_parts(folder: bytes, root: bytes) -> list[bytes] | None:
    """The folder names from ``root`` down to ``folder`` itself (``[]`` for
    the root), or ``None`` when ``folder`` is not textually inside ``root``."""
    root = os.path.normpath(root).rstrip(b"/") or b"/"
    folder = os.path.normpath(folder)
    prefix = root if root.endswith(b"/") else root + b"/"
    if folder == root:
        return []
    if not folder.startswith(prefix):
        return None
    parts = folder[len(prefix) :].split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        return None
    return parts


def remove_empty_folder(folder: bytes, root: bytes) -> bool:
    """Remove ``folder`` if it is empty, reaching it from ``root`` without
    following a link (an ``as_unit`` move's emptied source folders); returns
    whether it was removed.

    ``root`` itself (and anything not textually inside it) is never removed.
    A symlink anywhere below ``root`` on the way, or at ``folder`` itself,
    leaves everything alone: removing by path would follow a link swapped in
    for a middle folder and remove an empty folder elsewhere (issue #14
    finding 15, review). A folder that is not empty or already gone is left
    quietly; any other error (permissions, a read-only share) is raised.
    """
    parts = _folder_parts(folder, root)
    if not parts:
        return False
    fds: list[int] = []
    try:
        try:
            fds.append(os.open(os.path.normpath(root), _DIR_FLAGS & ~os.O_NOFOLLOW))
            for name in parts[:-1]:
                fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                return False  # a link, or a folder that went: leave all
            raise
        try:
            # rmdir does not follow a final symlink (it fails ENOTDIR).
            os.rmdir(parts[-1], dir_fd=fds[-1])
        except OSError as exc:
            if exc.errno in _LEAVE:
                return False
            raise
        return True
    finally:
        for fd in fds:
            os.close(fd)


def prune_empty_parents(
    path: bytes,
    root: bytes | None,
    warn: Callable[..., None] | None = None,
) -> list[bytes]:
    """Remove ``path``'s parent folders while they are empty, deepest first,
    stopping below ``root``; returns the folders removed.

    Never follows a symlink, never removes ``root``, never raises for a
    folder it cannot remove (``warn("source_folder_kept", …)`` for errors
    other than the races listed in ``_LEAVE``).
    """
    if not root:
        return []
    parts = _components(path, root)
    if not parts:
        return []
    fds: list[int] = []
    removed: list[bytes] = []
    try:
        try:
            fds.append(os.open(os.path.normpath(root), _DIR_FLAGS & ~os.O_NOFOLLOW))
            # fds[i] is the folder that holds parts[i]; the last one is never
            # opened because nothing below it is removed through it.
            for name in parts[:-1]:
                fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
        except OSError:
            return []  # a symlink, a vanished or an unreadable folder: leave all
        for depth in range(len(parts) - 1, -1, -1):
            try:
                # rmdir does not follow a final symlink (it fails ENOTDIR).
                os.rmdir(parts[depth], dir_fd=fds[depth])
            except OSError as exc:
                if exc.errno not in _LEAVE and warn is not None:
                    where = os.path.join(root, *parts[: depth + 1])
                    warn("source_folder_kept", path=show(where), error=exc.strerror or str(exc))
                break
            removed.append(os.path.join(root, *parts[: depth + 1]))
    finally:
        for fd in fds:
            os.close(fd)
    return removed


__all__ = ["prune_empty_parents", "remove_empty_folder"]
