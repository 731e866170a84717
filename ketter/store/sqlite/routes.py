"""SQLite job store: routes (see :class:`ketter.store.ports.routes.RoutesPort`)."""

from __future__ import annotations

from ketter.store.sqlite.core import SqliteCore


class RoutesSql(SqliteCore):
    """The routes operations on SQLite."""
