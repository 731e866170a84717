"""SQLite job store: manifests (see :class:`ketter.store.ports.manifests.ManifestsPort`)."""

from __future__ import annotations

from ketter.store.sqlite.core import SqliteCore


class ManifestsSql(SqliteCore):
    """The manifests operations on SQLite."""
