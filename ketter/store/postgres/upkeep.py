"""The job store's upkeep on PostgreSQL, as ``ketter health`` checks it:
its tables vacuumed and analysed.

Every transition of a job writes a new row version and new index entries;
the old ones stay until a vacuum removes them, and the claims' search reads
them until then. Measured on a table with autovacuum off
(docs/performance-watcher.md, "Session 18"): 0.2 ms a search after 1,000
jobs, 14.5 ms after 100,000, 0.1 ms once vacuumed and analysed. The
default (``autovacuum = on``) keeps it short. A server where an operator
turned it off and vacuums on a schedule instead (a daily ``vacuumdb
--analyze``) passes while every store table was vacuumed and analysed
within :data:`BY_HAND`.

Only the store's own tables count (the models' and huey's), in the schema
the connection's ``search_path`` puts first: another application's tables
in the same database are not Ketter's to judge.
"""

from __future__ import annotations

from typing import Any

from ketter.store.models import MODELS

#: How recent a vacuum and an analysis by hand must be where autovacuum is
#: off: a daily schedule, with room for its own run time and a late timer.
BY_HAND = "36 hours"
#: The store's tables: the models' and the queue's (huey's ``huey_*``).
TABLES = sorted(
    [m._meta.table_name for m in MODELS] + ["huey_counter", "huey_kv", "huey_schedule", "huey_task"]
)

_SETTINGS = (
    "SELECT current_setting('autovacuum')::bool, current_setting('track_counts')::bool, "
    "current_schema()"
)
#: Each store table of the current schema, and whether autovacuum is turned
#: off for it (its storage parameter, read by PostgreSQL's own boolean
#: parser: ``off``, ``of``, ``false``, ``0``, ``no`` …).
_TABLES = (
    "SELECT c.relname, EXISTS (SELECT 1 FROM unnest(c.reloptions) AS o "
    "  WHERE o LIKE 'autovacuum\\_enabled=%%' AND NOT split_part(o, '=', 2)::bool) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(%s) "
    "ORDER BY c.relname"
)
#: Of the tables named, those not both vacuumed and analysed within BY_HAND.
_STALE = (
    "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s) "
    "AND schemaname = current_schema() AND ("
    f" coalesce(greatest(last_vacuum, last_autovacuum), '-infinity') < now() - interval '{BY_HAND}'"
    f" OR coalesce(greatest(last_analyze, last_autoanalyze), '-infinity') "
    f"    < now() - interval '{BY_HAND}') ORDER BY relname"
)

_COST = (
    "Every transition leaves a row version the claims' search reads until a vacuum "
    "removes it (14.5 ms a search after 100,000 jobs instead of 0.1 ms), and the "
    "planner needs the analyses' statistics."
)


def vacuum_check(conn: Any) -> tuple[bool, str]:
    """``(ok, detail)`` for the store's tables on the psycopg connection
    ``conn``."""
    server_on, counts_on, schema = conn.execute(_SETTINGS).fetchone()
    if not counts_on:
        return False, (
            "track_counts is off on the server: autovacuum cannot run and vacuums by "
            f"hand are not recorded. {_COST} Turn track_counts (and autovacuum) on"
        )
    tables = conn.execute(_TABLES, (TABLES,)).fetchall()
    if not tables:
        return False, (
            f"none of the job store's tables in schema {schema or '(none: search_path)'}; "
            "is store.dsn's search_path the one `ketter db upgrade` used?"
        )
    off = [name for name, disabled in tables if disabled or not server_on]
    if not off:
        return True, "autovacuum on"
    where = "on the server" if not server_on else "for " + ", ".join(off)
    stale = [r[0] for r in conn.execute(_STALE, (off,)).fetchall()]
    if not stale:
        return True, f"autovacuum off {where}; vacuumed and analysed by hand within {BY_HAND}"
    return False, (
        f"autovacuum off {where}; no vacuum and analysis recorded within {BY_HAND} "
        f"for: {', '.join(stale)}. {_COST} Turn autovacuum on, "
        "or run `vacuumdb --analyze` on the database daily"
    )
