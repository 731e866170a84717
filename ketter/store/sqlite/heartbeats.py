"""SQLite job store: heartbeats (see :class:`ketter.store.ports.heartbeats.HeartbeatsPort`)."""

from __future__ import annotations

from ketter.store.sqlite.core import SqliteCore


class HeartbeatsSql(SqliteCore):
    """The heartbeats operations on SQLite."""
