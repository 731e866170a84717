"""SQLite job store: leases (see :class:`ketter.store.ports.leases.LeasesPort`)."""

from __future__ import annotations

from ketter.store.sqlite.core import SqliteCore


class LeasesSql(SqliteCore):
    """The leases operations on SQLite."""
