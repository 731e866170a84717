"""Shared-storage checks (issue #18 item 6): every node must see the same
share at each route root.

Several nodes on one PostgreSQL database deliver into the same folders only
if each of them mounted the same share there. A node that mounted another
share, or nothing (an empty local folder), would deliver where no one looks
and, on a move route, delete the source after "delivering". So the first
node to run a job of a route writes a marker file in the route's destination
root and a move route's source root (:func:`marked_roots`: a copy route's
source is never written), ``.ketter-share-<route>.id`` holding a random id, and
records the id in the job store (``share_markers``); every node, before
every job (a good answer is kept :data:`RECHECK` seconds), checks that the
file is there with the recorded id. When it is not, the job raises
:class:`ketter.errors.RouteUnavailable`: the route pauses with the reason
(the path, the id expected, the id found) and the other routes keep
working; the sweep resumes it once the marker is right (the share mounted).

Only on PostgreSQL: one node on SQLite has nothing to agree with. The marker
is never a transfer (the watcher ignores ``.ketter-*``) nor a leftover (the
orphan sweep skips ``.ketter-share-*``: :func:`ketter.engine.cleanup.temp_job_id`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from ketter.engine.paths import SHARE_MARKER_PREFIX
from ketter.errors import RouteUnavailable

if TYPE_CHECKING:
    from ketter.config import RouteConfig
    from ketter.store.port import JobStore

#: Seconds a good check of a route root is trusted before it is read again.
RECHECK = 30.0
#: The most of a marker file read (an id is 32 hex digits and a newline).
MARKER_MAX = 256


def marker_name(route: str) -> str:
    """The marker's file name in each root of ``route``."""
    token = re.sub(r"[^A-Za-z0-9_.-]", "_", route)[:200]
    return f"{SHARE_MARKER_PREFIX.decode()}{token}.id"


def read_marker(path: str) -> str | None:
    """The id in the marker file ``path``; None when there is no such file.
    Raises OSError when it cannot be read (the share is not reachable), and
    when it is not a regular file: a symlink is not followed (one planted
    there could lend a wrong share the right id) and a FIFO does not hang
    the worker that reads it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        data = os.read(fd, MARKER_MAX)
    finally:
        os.close(fd)
    return data.decode("ascii", "replace").strip()


def write_marker(path: str, marker: str) -> str:
    """Create the marker file holding ``marker`` unless one is there already;
    returns the id the file holds ("" for a file that holds nothing yet).

    Written whole and flushed under a temporary name, then hard-linked to
    its name: a link never replaces a file (two nodes writing at once keep
    the first) and no one reads a half-written marker. Where the share has
    no hard links (some SMB servers), the file is created with ``O_EXCL``
    and written in place; a reader that comes between sees "" and waits
    (:meth:`ShareCheck._check` never records an empty id)."""
    tmp = f"{path}.{marker}.tmp"
    _create(tmp, marker)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return read_marker(path) or ""
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        try:
            _create(path, marker)
        except FileExistsError:
            return read_marker(path) or ""
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return marker


#: A filesystem without hard links says so with one of these.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def _create(path: str, marker: str) -> None:
    """``path`` created (``O_EXCL``) holding ``marker``, flushed; never left
    half-written under its name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        data = (marker + "\n").encode()
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write", path)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def marked_roots(route: RouteConfig) -> list[tuple[str, str]]:
    """The roots of ``route`` that carry a marker: the ones this node writes,
    the destination and a move route's source. A copy route's source is
    never written (it may be read-only: a share mounted so, or the workers'
    unit, which gives it no ``ReadWritePaths=``): it has no marker, and a
    wrong share there delivers nothing to a wrong place."""
    roots = [("destination", route.destination)]
    if route.mode == "move":
        roots.append(("source", route.source))
    return roots


class SourceShare:
    """Whether a move route's source root on this node is the share the
    nodes recorded (its marker), for the watcher (:meth:`problem`): a node
    whose share is not mounted would lead the route and watch an empty
    folder while a node that sees the share follows. Read only: the watcher
    never writes a marker, and a route no node has run yet is not judged.
    A copy route's source has no marker (:func:`marked_roots`): its
    ``source_mount`` is what tells an unmounted share there
    (docs/scale-out.md). The recorded id is read from the store until there
    is one, then kept (the first record is kept for good)."""

    def __init__(self, store: JobStore, route: RouteConfig) -> None:
        self.store = store
        self.route = route
        self._expected: str | None = None

    def problem(self) -> str | None:
        """Why the source root is not the nodes' share (None: it is, or no
        marker says otherwise, or the store cannot be asked now: its outage
        pauses the watcher on its own)."""
        route = self.route
        if route.mode != "move":
            return None
        if self._expected is None:
            try:
                self._expected = self.store.share_marker(route.name, "source")
            except Exception:  # the store's outage: the watcher pauses for it
                return None
            if self._expected is None:
                return None
        path = os.path.join(route.source, marker_name(route.name))
        try:
            found = read_marker(path)
        except OSError as exc:
            return f"the source's share marker {path} cannot be read ({exc.strerror})"
        if found == self._expected:
            return None
        shown = "none (no such file)" if found is None else repr(found)
        return (
            f"source {route.source} is not the share the other nodes use (its marker "
            f"{path} holds {shown}, expected {self._expected!r}): mount the same share "
            "as every other node"
        )


def _root_identity(root: str) -> tuple[int, int] | None:
    """The root folder's device and inode (None when it cannot be read): an
    unmount, or another share mounted there, changes them."""
    try:
        found = os.stat(root)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class ShareCheck:
    """The marker check of one process (the workers' runner), with the good
    answers kept :data:`RECHECK` seconds per route root, and only while the
    root is the folder it was (its device and inode, read at every check: a
    share unmounted under a good answer leaves its empty mount point, another
    device, and is checked again at once)."""

    def __init__(
        self,
        store: JobStore,
        node: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.node = node
        self.clock = clock
        self.wall = wall
        self._good: dict[tuple[str, str], tuple[float, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()

    def problem(self, route: RouteConfig) -> str | None:
        """Why this node must not work on ``route`` (a marker missing or
        another one), or None."""
        for side, root in marked_roots(route):
            key = (route.name, side)
            with self._lock:
                checked = self._good.get(key)
            # Read before the check: a change after it shows at the next call.
            identity = _root_identity(root)
            if (
                checked is not None
                and identity is not None
                and checked[1] == identity
                and self.clock() - checked[0] < RECHECK
            ):
                continue
            found = self._check(route.name, side, root)
            with self._lock:
                if found is None:
                    self._good[key] = (self.clock(), identity)
                else:
                    self._good.pop(key, None)
            if found is not None:
                return found
        return None

    def guard(self, route: RouteConfig) -> None:
        """Raise :class:`RouteUnavailable` when :meth:`problem` says why."""
        found = self.problem(route)
        if found is not None:
            raise RouteUnavailable(f"{found}; nothing was written or deleted")

    def _check(self, route: str, side: str, root: str) -> str | None:
        path = os.path.join(root, marker_name(route))
        try:
            expected = self.store.share_marker(route, side)
            if expected is None:
                # The first node to run the route: its share is the one.
                on_disk = read_marker(path)
                if on_disk is None:
                    on_disk = write_marker(path, uuid.uuid4().hex)
                if not on_disk:
                    # Being written by another thread or node (a share without
                    # hard links), or left empty by a crash: never recorded.
                    return (
                        f"route {route}: {side} root {root}: the share marker {path} is "
                        "empty (being written, or left so by a crash: remove it if it stays)"
                    )
                expected = self.store.record_share_marker(
                    route, side, path=root, marker=on_disk, node=self.node, now=self.wall()
                )
            found = read_marker(path)
        except OSError as exc:
            return (
                f"route {route}: {side} root {root}: the share marker {path} cannot be "
                f"read or written ({exc.strerror}); check the share"
            )
        if found == expected:
            return None
        shown = "none (no such file)" if found is None else repr(found)
        return (
            f"route {route}: {side} root {root} is not the share the other nodes use: its "
            f"marker {path} holds {shown}, expected {expected!r}: this node mounted "
            "another share there, or nothing; mount the same share as every other node "
            "(the route resumes by itself once the marker is right)"
        )
