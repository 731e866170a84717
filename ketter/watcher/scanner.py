"""Listing a route source: full walks and incremental (changed-folder) scans.

Full scan (at start, after a restored watch or an inotify overflow, and every
``rescan_interval``): walks the whole tree. It is the reconciliation that
finds whatever events missed — including files that arrived while the
watcher was down (R-W1).

Incremental scan (polling routes, every ``poll_interval``): stats only the
known folders and lists those whose mtime changed, because creating,
renaming or deleting an entry changes its folder's mtime. A file modified in
place does not; pending candidates are re-observed anyway, and a delivered
file changed in place is found by the next full scan. watchdog's
``PollingObserver`` is not used: it re-stats every file of the tree and
keeps a snapshot of all of them in memory at every interval, which over
100,000 files on NFS is both slow and heavy.

Folder mtimes and listings on FUSE network clients (issue #15 §1): sshfs
answers ``stat`` and ``readdir`` from a client cache (20 s by default), so
a folder whose new mtime showed could still list the old entries, and its
new file waited for the 10-minute rescan (590–599 s measured); an smbnetfs
share root has a constant mtime (0, 1970) and never looked changed (600 s).
On those filesystems (:func:`ketter.mounts.listings_cached`) a folder seen
changed is listed at every poll for :data:`RELIST_SECONDS` afterwards, and
a folder whose mtime is 0 is listed at every poll: a new file is found
within ``poll_interval`` of the client's cache horizon.

Paths are bytes throughout; symbolic links are never followed (R-O4).

A folder or file whose full path is longer than ``PATH_MAX`` (4,096 bytes
on Linux) cannot be opened by name (``ENAMETOOLONG``) anywhere in the
pipeline; the walk used to skip it without a word (issue #14 finding 12).
It is now reported to ``on_unreachable(relpath, reason)`` (the route watch
logs every such path and alerts once per route) and never becomes a job.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ketter.mounts import listings_cached
from ketter.watcher.identity import Version, file_version
from ketter.watcher.patterns import RoutePatterns

#: The longest path the kernel resolves by name (including the final NUL).
PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
#: ``on_unreachable(relpath, reason)``: a path the scan cannot reach by name.
Unreachable = Callable[[bytes, str], None]
#: How long a changed folder on a caching FUSE client is listed at every
#: poll: past sshfs's default cache (``dcache_timeout``/``cache_timeout``
#: 20 s), with room for an attribute cache that expired first.
RELIST_SECONDS = 45.0


@dataclass(frozen=True, slots=True)
class Found:
    """A candidate seen by a scan: a file, or an ``as_unit`` top-level folder.

    ``version`` is the file's ``lstat`` version; None for folders (their
    listing is computed by the readiness observation).
    """

    relpath: bytes
    kind: str
    version: Version | None


class Scanner:
    """Scans one route source. ``track_dirs`` keeps folder mtimes for
    incremental polling (only polling routes need them)."""

    def __init__(
        self,
        root: bytes,
        patterns: RoutePatterns,
        *,
        as_unit: bool,
        track_dirs: bool,
        on_unreachable: Unreachable | None = None,
    ) -> None:
        self.root = root
        self.on_unreachable = on_unreachable
        self.patterns = patterns
        self.as_unit = as_unit
        self.track_dirs = track_dirs
        #: relpath of every folder scanned (b"" = the root) → its mtime_ns
        self.dir_mtimes: dict[bytes, int] = {}
        #: candidate files (and folders) matched by the last full scan
        self.files_seen = 0
        #: relpath → monotonic time until which it is listed at every poll
        #: (a folder seen changed on a caching FUSE client, module docstring)
        self.relist_until: dict[bytes, float] = {}

    def abspath(self, relpath: bytes) -> bytes:
        return os.path.join(self.root, relpath) if relpath else self.root

    def top_level(self, relpath: bytes) -> bytes:
        return relpath.split(b"/", 1)[0]

    def _too_long(self, relpath: bytes, exc: OSError | None = None) -> bool:
        """Report ``relpath`` when its full path cannot be reached by name;
        True if it was (the caller then skips it)."""
        if exc is not None and exc.errno != errno.ENAMETOOLONG:
            return False
        size = len(self.abspath(relpath))
        if exc is None and size < PATH_MAX:
            return False
        if self.on_unreachable is not None:
            self.on_unreachable(
                relpath,
                f"its full path is {size} bytes, longer than PATH_MAX ({PATH_MAX}): "
                "no program can open it by name; shorten the folder names",
            )
        return True

    # -- full scan -------------------------------------------------------

    def full_scan(self) -> Iterator[Found]:
        """Every candidate under the root (raises OSError if the root
        cannot be listed: the caller treats that as a lost watch)."""
        self.dir_mtimes = {}
        count = 0
        for found in self._walk(b"", top=True):
            count += 1
            yield found
        self.files_seen = count

    def _walk(self, rel_dir: bytes, *, top: bool = False) -> Iterator[Found]:
        """Depth-first walk below ``rel_dir``. Only the root may fail loudly;
        a sub-folder that vanishes or cannot be read mid-walk is skipped."""
        stack = [rel_dir]
        while stack:
            rel = stack.pop()
            path = self.abspath(rel)
            try:
                mtime = os.lstat(path).st_mtime_ns
                entries = list(os.scandir(path))
            except OSError as exc:
                if top and rel == rel_dir:
                    raise
                self._too_long(rel, exc)
                continue
            if self.track_dirs:
                self.dir_mtimes[rel] = mtime
            for entry in entries:
                child = rel + b"/" + entry.name if rel else entry.name
                found = self._classify(entry, child, stack)
                if found is not None:
                    yield found

    def _classify(
        self, entry: os.DirEntry[bytes], child: bytes, stack: list[bytes]
    ) -> Found | None:
        """A Found for a candidate entry; pushes folders to walk on ``stack``."""
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file(follow_symlinks=False)
        except OSError:
            return None
        in_folder = self.as_unit and b"/" in child
        if is_dir:
            if self.as_unit and not in_folder:
                if not self.patterns.is_candidate(child):
                    return None
                if self.track_dirs:
                    stack.append(child)  # its mtimes show changes inside it
                return Found(child, "folder", None)
            if in_folder or not self.patterns.prune_dir(child):
                if in_folder and not self.track_dirs:
                    return None
                stack.append(child)
            return None
        if not is_file or in_folder or not self.patterns.is_candidate(child):
            return None
        if self._too_long(child):
            return None  # its folder fits, the file's own path does not
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return None  # vanished between listing and stat
        if not stat.S_ISREG(st.st_mode):
            return None
        return Found(child, "file", file_version(st))

    # -- incremental -----------------------------------------------------

    def changed_dirs(self) -> list[bytes]:
        """Known folders whose mtime changed (the root included); vanished
        folders are forgotten with their descendants."""
        changed: list[bytes] = []
        gone: list[bytes] = []
        now = time.monotonic()
        for rel, mtime in self.dir_mtimes.items():
            try:
                st = os.lstat(self.abspath(rel))
            except OSError:
                gone.append(rel)
                continue
            if st.st_mtime_ns != mtime or (mtime == 0 and listings_cached(st.st_dev)):
                changed.append(rel)
                if listings_cached(st.st_dev):
                    self.relist_until[rel] = now + RELIST_SECONDS
            elif self.relist_until.get(rel, 0.0) > now:
                changed.append(rel)
        for rel in [k for k, until in self.relist_until.items() if until <= now]:
            del self.relist_until[rel]
        for rel in gone:
            self.forget_dir(rel)
        return [rel for rel in changed if rel in self.dir_mtimes]

    def forget_dir(self, rel: bytes) -> None:
        prefix = rel + b"/"
        for key in [k for k in self.dir_mtimes if k == rel or k.startswith(prefix)]:
            del self.dir_mtimes[key]
            self.relist_until.pop(key, None)

    def list_dir(self, rel_dir: bytes) -> Iterator[Found]:
        """Candidates directly in ``rel_dir``, plus everything below the
        sub-folders not seen before (new folders, or folders moved in)."""
        if self.as_unit and rel_dir:
            # A change inside a top-level folder: the folder is the candidate.
            top = self.top_level(rel_dir)
            if self.patterns.is_candidate(top):
                self.forget_dir(top)
                for _ in self._walk(top):  # re-record its sub-folders' mtimes
                    pass
                yield Found(top, "folder", None)
            return
        path = self.abspath(rel_dir)
        try:
            mtime = os.lstat(path).st_mtime_ns
            entries = list(os.scandir(path))
        except OSError as exc:
            self._too_long(rel_dir, exc)
            return
        if self.track_dirs:
            self.dir_mtimes[rel_dir] = mtime
        new_dirs: list[bytes] = []
        names = set()
        for entry in entries:
            child = rel_dir + b"/" + entry.name if rel_dir else entry.name
            names.add(child)
            stack: list[bytes] = []
            found = self._classify(entry, child, stack)
            new_dirs.extend(d for d in stack if d not in self.dir_mtimes)
            if found is not None and found.kind == "folder" and child in self.dir_mtimes:
                # A known as_unit folder: changes inside it show in its own
                # folders' mtimes; re-walking every folder whenever the root
                # changes would cost a full listing of each.
                continue
            if found is not None:
                yield found
        if self.track_dirs:
            # Sub-folders deleted or renamed away: forget them.
            prefix = rel_dir + b"/" if rel_dir else b""
            for rel in [
                k
                for k in self.dir_mtimes
                if k and k.startswith(prefix) and b"/" not in k[len(prefix) :] and k not in names
            ]:
                self.forget_dir(rel)
        for rel in new_dirs:
            yield from self._walk(rel)

    def walk_new(self, rel_dir: bytes) -> Iterator[Found]:
        """Everything below a folder an event reported as created/moved in."""
        if self.as_unit:
            top = self.top_level(rel_dir)
            if self.patterns.is_candidate(top):
                yield Found(top, "folder", None)
            return
        if self.patterns.prune_dir(rel_dir):
            return
        yield from self._walk(rel_dir)

    def stat_candidate(self, relpath: bytes) -> Found | None:
        """A Found for one path an event named (None: not a candidate now)."""
        if self.as_unit and b"/" in relpath:
            top = self.top_level(relpath)
            return Found(top, "folder", None) if self.patterns.is_candidate(top) else None
        if not self.patterns.is_candidate(relpath):
            return None
        try:
            st = os.lstat(self.abspath(relpath))
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) and self.as_unit:
            return Found(relpath, "folder", None)
        if not stat.S_ISREG(st.st_mode):
            return None
        return Found(relpath, "file", file_version(st))
