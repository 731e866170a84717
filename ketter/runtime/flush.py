"""Group commit for fsyncs: one flush covers every writer that was waiting.

A writer takes a ticket right after its write (a commit appended to the job
store's WAL, a rename in a folder) and then asks for a flush that covers the
ticket. A flush covers every ticket handed out before it started, so the
threads that queued while another thread's fsync was running find their
write already on the disk and return without an fsync of their own. With N
workers reaching the same flush point at once, the disk sees one flush
instead of N; a lone writer pays exactly what a plain fsync costs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

#: Folders whose fsyncs are grouped at once; beyond it, idle groups are
#: forgotten (a forgotten group only loses coalescing, never a flush).
MAX_GROUPS = 1024


class FlushGroup:
    """The tickets and flushes of one file or folder."""

    def __init__(self) -> None:
        self._issue = threading.Lock()
        self._flush = threading.Lock()
        self._issued = 0
        self._flushed = 0
        #: fsyncs actually run (tests and benchmarks read it).
        self.flushes = 0

    def ticket(self) -> int:
        """Call right after the write that must become durable."""
        with self._issue:
            self._issued += 1
            return self._issued

    def flush(self, ticket: int, fsync: Callable[[], None]) -> None:
        """Return once every write up to ``ticket`` is on the disk, running
        ``fsync`` unless a flush that started after ``ticket`` already did.
        An error reaches this caller only; the next caller flushes again."""
        with self._flush:
            if self._flushed >= ticket:
                return
            with self._issue:
                target = self._issued
            fsync()
            self.flushes += 1
            self._flushed = target

    def sync(self, fsync: Callable[[], None]) -> None:
        """``ticket()`` then ``flush()``: for a caller whose write is done."""
        self.flush(self.ticket(), fsync)


_groups: dict[bytes, FlushGroup] = {}
_groups_lock = threading.Lock()


def group_for(path: bytes) -> FlushGroup:
    """The process-wide group of ``path`` (by its bytes, not resolved)."""
    with _groups_lock:
        group = _groups.get(path)
        if group is None:
            if len(_groups) >= MAX_GROUPS:
                _groups.clear()
            group = _groups[path] = FlushGroup()
        return group


def grouped_fsync(path: bytes, fsync: Callable[[], None]) -> None:
    """Run ``fsync`` for ``path`` (an absolute path) unless a flush of the
    same path that started after this call already covers it."""
    group_for(os.fsencode(path)).sync(fsync)
