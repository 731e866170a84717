"""SQLite job store: events (see :class:`ketter.store.ports.events.EventsPort`)."""

from __future__ import annotations

from ketter.store.sqlite.core import SqliteCore


class EventsSql(SqliteCore):
    """The events operations on SQLite."""
