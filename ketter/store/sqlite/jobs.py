"""SQLite job store: jobs (see :class:`ketter.store.ports.jobs.JobsPort`)."""

from __future__ import annotations

from ketter.store.sqlite.core import SqliteCore


class JobsSql(SqliteCore):
    """The jobs operations on SQLite."""
