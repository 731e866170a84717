"""Readiness (R-W3): a candidate is ready when its version stayed unchanged
for ``stable_seconds`` across at least two observations.

Events (inotify close/move) only *suggest* looking again; they never replace
the check, because a writer may close and reopen (watchdog #586) and an
event says nothing about writes from other hosts. Memory is bounded: only
candidates not yet delivered are tracked, at most ``capacity`` per route;
the job store, not this tracker, remembers what was delivered.

A quiet period is not proof that a writer is done: a render or an export
that stalls longer than ``stable_seconds`` had its partial file delivered
(issue #14, finding 15). So a candidate that passed the test is ready only
once no process holds it (or, for a folder, any file in it) open for
writing (:func:`still_written`); on a network share a writer on another
host cannot be seen, and only a ``ready_marker`` proves a file complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketter.choices import Folders, Kind, Mode
from ketter.engine.open_writers import OpenWriter, describe, open_writers
from ketter.watcher.identity import Version

if TYPE_CHECKING:
    from ketter.config.schema import Config
    from ketter.mounts import Mount


@dataclass(slots=True)
class Pending:
    """What the tracker knows about one candidate."""

    kind: str  # file | folder
    version: Version | None  # None: hinted, not observed yet
    since: float  # clock time of the first observation of ``version``
    seen: int  # observations of ``version``
    due: float  # next observation time


class StabilityTracker:
    """Candidates of one route and their observations.

    ``clock`` times are monotonic seconds: a wall-clock step (NTP) must not
    make a growing file look old.
    """

    def __init__(
        self,
        *,
        stable_seconds: float,
        poll_interval: float,
        folder_interval: float | None = None,
        capacity: int = 100_000,
    ) -> None:
        self.stable_seconds = stable_seconds
        self.poll_interval = poll_interval
        # Re-walking a big folder every poll is costly (every file is stat'ed);
        # observations at stable_seconds/2 still prove a full quiet period.
        self.folder_interval = (
            folder_interval
            if folder_interval is not None
            else max(poll_interval, stable_seconds / 2)
        )
        self.capacity = capacity
        self._pending: dict[bytes, Pending] = {}
        #: set when a candidate could not be tracked because the tracker was
        #: full; the route then rescans once there is room again.
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, relpath: bytes) -> bool:
        return relpath in self._pending

    def add(self, relpath: bytes, kind: str, now: float, version: Version | None = None) -> bool:
        """Track ``relpath`` (no-op if tracked); False when full."""
        if relpath in self._pending:
            return True
        if len(self._pending) >= self.capacity:
            self.overflowed = True
            return False
        self._pending[relpath] = Pending(kind, version, now, 1 if version else 0, now)
        if version is not None:
            self._pending[relpath].due = self._next_due(self._pending[relpath], now)
        return True

    def discard(self, relpath: bytes) -> None:
        self._pending.pop(relpath, None)

    def poke(self, relpath: bytes, now: float) -> None:
        """An event touched ``relpath``: observe it at the next tick."""
        entry = self._pending.get(relpath)
        if entry is not None:
            entry.due = min(entry.due, now)

    def defer(self, relpath: bytes, until: float) -> None:
        """Could not observe ``relpath`` now (busy, locked): try at ``until``."""
        entry = self._pending.get(relpath)
        if entry is not None:
            entry.due = until

    def due(self, now: float) -> Iterator[tuple[bytes, Pending]]:
        """Candidates to observe now (a snapshot; safe to modify during)."""
        return iter([(k, p) for k, p in self._pending.items() if p.due <= now])

    def observe(self, relpath: bytes, version: Version, now: float) -> bool:
        """Record an observation; True when the candidate is stable."""
        entry = self._pending[relpath]
        if entry.version is not None and entry.version.same_as(version):
            entry.seen += 1
        else:
            entry.version, entry.since, entry.seen = version, now, 1
        stable = entry.seen >= 2 and now - entry.since >= self.stable_seconds
        # Stable: due at once. A polling scan's lstat is an observation too;
        # without this the scan that completes the quiet period would push
        # the readiness check a whole poll_interval further.
        entry.due = now if stable else self._next_due(entry, now)
        return stable

    def _next_due(self, entry: Pending, now: float) -> float:
        interval = self.folder_interval if entry.kind == Kind.FOLDER else self.poll_interval
        quiet_at = entry.since + self.stable_seconds
        # Look again when the quiet period could be over, or at the next
        # poll, whichever comes first (but never in a busy loop).
        return max(now + 0.05, min(now + interval, quiet_at if quiet_at > now else now + interval))

    def next_due(self) -> float | None:
        return min((p.due for p in self._pending.values()), default=None)

    def room(self) -> bool:
        """Half empty again after an overflow: time for the catch-up scan."""
        return len(self._pending) < self.capacity // 2


def still_written(candidates: list[tuple[bytes, str, Version, bytes]]) -> dict[bytes, str]:
    """``{relpath: who}`` of the ``(relpath, kind, version, abspath)``
    candidates some process holds open for writing (one pass over /proc)."""
    files = [(v.dev, v.inode) for _rel, kind, v, _path in candidates if kind == Kind.FILE]
    folders = [path for _rel, kind, _v, path in candidates if kind == Kind.FOLDER]
    if not candidates:
        return {}
    writers = open_writers(files, folders)
    busy: dict[bytes, list[OpenWriter]] = {}
    for rel, kind, v, path in candidates:
        if kind == Kind.FILE:
            mine = [w for w in writers if (w.dev, w.ino) == (v.dev, v.inode)]
        else:
            prefix = path.rstrip(b"/") + b"/"
            mine = [w for w in writers if w.path.startswith(prefix)]
        if mine:
            busy[rel] = mine
    return {rel: describe(ws) for rel, ws in busy.items()}


def ready_marker_warnings(config: Config, mounts: list[Mount] | None = None) -> list[str]:
    """Warnings for ``ketter config check``: move and ``as_unit`` routes on a
    network (or FUSE) source without ``ready_marker``. There a writer on
    another host holds no descriptor this node can see, so a writer that
    pauses longer than ``stable_seconds`` cannot be told from a finished
    one (finding 15); a move would then delete the rest of its file."""
    from ketter.mounts import mount_of
    from ketter.watcher.mounts import LOCAL_FS_TYPES

    warnings = []
    for route in config.routes:
        if route.ready_marker or (route.mode != Mode.MOVE and route.folders != Folders.AS_UNIT):
            continue
        try:
            mount = mount_of(os.fsencode(route.source), mounts)
        except OSError:
            continue  # check_roots reports an unreadable mount table
        if mount is None or mount.fs_type in LOCAL_FS_TYPES:
            continue
        what = "a move route" if route.mode == Mode.MOVE else "an as_unit route"
        warnings.append(
            f"route {route.name!r}: {what} on {mount.fs_type} mount "
            f"{os.fsdecode(mount.mount_point)} without ready_marker: Ketter cannot see "
            "a writer on another host, so a file or folder whose writer pauses longer "
            f"than stable_seconds ({route.stable_seconds:g}s) is delivered incomplete"
            + (" and its source deleted" if route.mode == Mode.MOVE else "")
            + "; have the writer create a marker and set ready_marker (e.g. '.done')"
        )
    return warnings
