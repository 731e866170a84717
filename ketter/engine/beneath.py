"""Reaching destination folders without following a symbolic link.

Anyone who can write in a destination zone can plant ``dst/sub ->
/elsewhere``; a path-based ``os.makedirs(dst/sub/x)`` and a rename into
``dst/sub/x/name`` would then write outside the route (issue #14 finding 1:
a delivery replaced Ketter's own audit log). So every folder under a
destination root is reached from an ``O_DIRECTORY`` descriptor of the root,
one component at a time with ``openat(O_NOFOLLOW | O_DIRECTORY)``; missing
folders are made with ``mkdirat``; the caller does its final renames, links,
flushes and metadata changes relative to the descriptor it gets back. A
link in the way is a :class:`~ketter.errors.DestinationLinkError`
(permanent: retrying cannot help until a person removes the link).

``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` would do the same in one
call, but Python's ``os`` does not expose it; the per-component walk works
on every kernel and filesystem (NFS and SMB included).

The walk is relative, so it also reaches folders whose full path is longer
than ``PATH_MAX`` (4,096 bytes): only each component must fit in
``NAME_MAX``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from ketter.errors import DestinationLinkError, PathOutsideRoute

from .paths import show, split

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Mode of the folders Ketter creates on the way (umask applies, as with
#: ``os.makedirs``).
DIR_MODE = 0o777


def components(root: bytes, path: bytes) -> list[bytes]:
    """The names leading from ``root`` to ``path``; ``path`` must be ``root``
    or lexically below it, with no ``.``/``..``/empty component."""
    base = root.rstrip(b"/") or b"/"
    path = path.rstrip(b"/") or b"/"
    if path == base:
        return []
    prefix = base if base == b"/" else base + b"/"
    if not path.startswith(prefix):
        raise PathOutsideRoute(
            f"destination {show(path)} is not below its route root {show(root)}; "
            "fix the route or the job's destination"
        )
    parts = path[len(prefix) :].split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        raise PathOutsideRoute(f"destination {show(path)} is not a plain path below {show(root)}")
    return parts


def step(fd: int, name: bytes, where: bytes, *, create: bool) -> int:
    """Open folder ``name`` inside the folder ``fd`` (shown as ``where``)
    without following a link; create it first when missing and ``create``."""
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):  # another job made it
                os.mkdir(name, DIR_MODE, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                refuse_link(fd, name, where)
            raise
    return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)


def refuse_link(fd: int, name: bytes, where: bytes) -> None:
    """Raise :class:`DestinationLinkError` when ``name`` in ``fd`` is a link."""
    try:
        st = os.lstat(name, dir_fd=fd)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise DestinationLinkError(
            f"destination path component {show(name)} under {show(where)} is a "
            "symbolic link; Ketter does not follow links in a destination: replace "
            "it with a real folder (or change the route), then re-queue the job"
        )


def open_dir(root: bytes, path: bytes, *, create: bool = False) -> int:
    """Descriptor of folder ``path`` reached from ``root`` without following
    a link below ``root`` (the root itself is the operator's setting and may
    be a link). Missing folders are created when ``create``."""
    parts = components(root, path)
    fd = os.open(root, _DIR_FLAGS)
    where = root.rstrip(b"/") or b"/"
    try:
        for name in parts:
            nfd = step(fd, name, where, create=create)
            os.close(fd)
            fd = nfd
            where = where + b"/" + name if where != b"/" else b"/" + name
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_below(fd: int, rel: bytes, where: bytes) -> int:
    """A new descriptor of folder ``rel`` (relative, ``/``-separated; empty:
    ``fd`` itself) below the folder ``fd`` (shown as ``where``), reached
    without following a link; ``fd`` stays open."""
    nfd = os.dup(fd)
    try:
        for name in (p for p in rel.split(b"/") if p):
            if name in (b".", b".."):
                raise PathOutsideRoute(f"{show(rel)} is not a plain path below {show(where)}")
            nxt = step(nfd, name, where, create=False)
            os.close(nfd)
            nfd = nxt
            where = where + b"/" + name
    except BaseException:
        os.close(nfd)
        raise
    return nfd


def parent_root(root: bytes | None, final: bytes) -> bytes:
    """The walk's root: the route's destination root, or (no root set, as in
    engine tests) the final name's own folder."""
    return root if root is not None else split(final)[0]


def open_parent(root: bytes | None, final: bytes, *, create: bool = False) -> tuple[int, bytes]:
    """(descriptor of ``final``'s folder, ``final``'s name), the folder
    reached from ``root`` without following a link."""
    parent, name = split(final)
    return open_dir(parent_root(root, final), parent, create=create), name


@contextlib.contextmanager
def parent_fd(root: bytes | None, final: bytes, *, create: bool = False) -> Iterator[int]:
    """:func:`open_parent` as a context manager yielding the descriptor."""
    fd, _name = open_parent(root, final, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def make_dirs(root: bytes | None, path: bytes) -> None:
    """``os.makedirs(path, exist_ok=True)`` that never follows a link below
    ``root`` (``root`` None: ``path``'s parent)."""
    os.close(open_dir(parent_root(root, path), path, create=True))


def check_parent(root: bytes | None, final: bytes) -> None:
    """Refuse (:class:`DestinationLinkError`) a link on the way to ``final``."""
    os.close(open_parent(root, final)[0])
