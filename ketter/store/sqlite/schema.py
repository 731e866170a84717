"""Creating the SQLite job store or upgrading its schema (``ketter db upgrade``)."""

from __future__ import annotations

import os

from ketter.store.db import connect, upgrade


def upgrade_schema(path: str | os.PathLike[str]) -> list[str]:
    """Create the job store at ``path`` or apply its pending migrations (under
    the migration lock); returns the names applied, empty when current. Does
    not check whether a new store may be created there (the caller does:
    :func:`ketter.store.guard.ensure_may_create`)."""
    db = connect(path)
    applied = upgrade(db)
    db.close()
    return applied
