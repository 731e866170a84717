"""peewee without its PostgreSQL driver until a PostgreSQL store is opened.

peewee imports psycopg at its own import, and ``playhouse.migrations``
again through ``playhouse.postgres_ext`` (0.10 s of the 0.27 s every
``ketter`` command spent importing, measured with ``python -X importtime``),
although a node on SQLite, the default, never uses it. :func:`hide_psycopg`
imports both with psycopg hidden, so their module-level ``psycopg`` names
stay ``None`` (``postgres_ext``'s then only lacks hstore support, which
Ketter does not use); the PostgreSQL store brings the driver itself,
through its own adapter (:class:`ketter.store.postgres.adapter.Psycopg3`),
which reads none of peewee's driver globals. Nothing else is hidden: a later
``import psycopg`` (the PostgreSQL store, huey's ``PostgresStorage``) imports
it as usual.

It runs from :mod:`ketter.store`'s ``__init__``: every import of peewee in
Ketter is under :mod:`ketter.store`. A process that imported peewee or
psycopg before keeps them as they are.
"""

from __future__ import annotations

import sys

#: The modules peewee tries in turn for PostgreSQL.
_DRIVERS = ("psycopg", "psycopg2", "psycopg2cffi")


def hide_psycopg() -> None:
    """Import peewee and ``playhouse.migrations`` with the PostgreSQL
    drivers hidden (see module docstring); a no-op once peewee or a driver
    is imported."""
    if "peewee" in sys.modules or any(name in sys.modules for name in _DRIVERS):
        return
    for name in _DRIVERS:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import peewee  # noqa: F401
        import playhouse.migrations  # noqa: F401
    finally:
        for name in _DRIVERS:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
