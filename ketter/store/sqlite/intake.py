"""SQLite job store: intake (see :class:`ketter.store.ports.intake.IntakePort`)."""

from __future__ import annotations

from ketter.store.sqlite.core import SqliteCore


class IntakeSql(SqliteCore):
    """The intake operations on SQLite."""
