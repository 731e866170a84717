"""One request's access to the job store: a read connection lent for one
step of the request, and the node's job store for writes.

peewee keeps a connection per thread; Starlette runs each sync handler (and
each sync dependency) on a worker thread of its pool, and nothing says the
next step of the request runs on the same one. So a request never keeps a
connection across steps: :func:`session` lends what one step reads through
and takes it back on that same thread before the step ends; the job store's
connection of the thread is closed after the step (writes are rare).

Reads go through :class:`ReadConnections`: read-only connections lent to one
step at a time and kept open between requests. Opening one per request cost
more than the query it served (SQLite reads and parses the schema and starts
with an empty page cache on each new connection: about 0.5 ms of CPU, twice
a request). A connection is dropped after :data:`RECYCLE_SECONDS` (a store
file replaced by a restore is then seen) or when a read through it failed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ketter.store.sqlite_read import SqliteReadStore

if TYPE_CHECKING:
    from ketter.node import Node
    from ketter.store.port import JobStore

#: Seconds a read connection is reused before it is closed and reopened.
RECYCLE_SECONDS = 30.0
#: Idle read connections kept (the handler threads, the stream's polls).
KEEP_IDLE = 8


@dataclass(frozen=True)
class Session:
    """The node's job store (writes, through the same functions the CLI
    uses) and a read-only view of it (lists, details)."""

    node: Node
    store: JobStore
    read: SqliteReadStore


class ReadConnections:
    """Read-only connections to the job store, each lent to one thread at a
    time (:meth:`lend`); never two users of one connection at once."""

    def __init__(
        self,
        open_read: Callable[[], SqliteReadStore],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_read
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: list[tuple[SqliteReadStore, float]] = []

    @contextlib.contextmanager
    def lend(self) -> Iterator[SqliteReadStore]:
        """A connection for the block; returned to the idle ones after it
        unless it failed or is due to be recycled."""
        read, opened = self._take()
        ok = False
        try:
            yield read
            ok = True
        finally:
            # Only a read-only connection is kept: an ``immutable`` one
            # (no writer was running) would not see a writer that starts.
            if ok and read.how == "read-only" and self._clock() - opened < RECYCLE_SECONDS:
                self._give_back(read, opened)
            else:
                read.close()

    def _take(self) -> tuple[SqliteReadStore, float]:
        with self._lock:
            while self._idle:
                read, opened = self._idle.pop()
                if self._clock() - opened < RECYCLE_SECONDS:
                    return read, opened
                read.close()
        return self._open(), self._clock()

    def _give_back(self, read: SqliteReadStore, opened: float) -> None:
        with self._lock:
            if len(self._idle) < KEEP_IDLE:
                self._idle.append((read, opened))
                return
        read.close()

    def close(self) -> None:
        """Close every idle connection (the server stops)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for read, _ in idle:
            read.close()


def read_connections(node: Node) -> ReadConnections:
    """The read connections of ``node``'s job store."""
    return ReadConnections(lambda: node.open_read(shared=True))


@contextlib.contextmanager
def session(request: Any) -> Iterator[Session]:
    """The connections of one step of ``request`` (a Starlette request or
    anything with its ``app``), on this thread, given back after."""
    state = request.app.state
    node: Node = state.node
    store = node.store
    assert store is not None
    try:
        with state.reads.lend() as read:
            yield Session(node, store, read)
    finally:
        store.release_thread()
