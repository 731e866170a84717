"""One request's access to the job store: its own connections, opened by the
handler's thread and closed before the answer leaves.

peewee keeps a connection per thread; Starlette runs each sync handler (and
each sync dependency) on a worker thread of its pool, and nothing says the
next step of the request runs on the same one. So a request never keeps a
connection across steps: :func:`session` opens what the step reads and
writes through, and closes it on that same thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketter.store.sqlite_read import SqliteReadStore

if TYPE_CHECKING:
    from ketter.node import Node
    from ketter.store.port import JobStore


@dataclass(frozen=True)
class Session:
    """The node's job store (writes, through the same functions the CLI
    uses) and a read-only view of it (lists, details)."""

    node: Node
    store: JobStore
    read: SqliteReadStore


@contextlib.contextmanager
def session(node: Node) -> Iterator[Session]:
    """This thread's connections for one step of a request, closed after."""
    store = node.store
    assert store is not None
    read = node.open_read()
    try:
        yield Session(node, store, read)
    finally:
        read.close()
        store.release_thread()
