"""The job store's upkeep on PostgreSQL, as ``ketter health`` checks it:
its tables vacuumed and analysed.

Every transition of a job writes a new row version and new index entries;
the old ones stay until a vacuum removes them, and the claims' search reads
them until then. Measured on a table with autovacuum off
(docs/performance-watcher.md, "Session 18"): 0.2 ms a search after 1,000
jobs, 14.5 ms after 100,000, 0.1 ms once vacuumed and analysed. The
default (``autovacuum = on``) keeps it short. A server where an operator
turned it off and vacuums on a schedule instead (``vacuumdb --analyze``)
passes while every store table was vacuumed and analysed within
:data:`BY_HAND`.
"""

from __future__ import annotations

from typing import Any

#: How recent a vacuum and an analysis by hand must be where autovacuum is off.
BY_HAND = "1 day"

#: Autovacuum on for the whole server (it needs the statistics' counts).
_SERVER_ON = "SELECT current_setting('autovacuum')::bool AND current_setting('track_counts')::bool"
#: The store's tables (the current schema's), with autovacuum turned off for
#: the table itself (a storage parameter, PostgreSQL's spellings of false).
_TABLES = (
    "SELECT c.relname, EXISTS (SELECT 1 FROM unnest(c.reloptions) AS o "
    "  WHERE o ~* '^autovacuum_enabled=(f|fa|fal|fals|false|n|no|off|0)$') "
    "FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
    "AND c.relkind = 'r' ORDER BY c.relname"
)
#: Of the tables named, those not both vacuumed and analysed within BY_HAND.
_STALE = (
    "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s) "
    "AND schemaname = current_schema() AND ("
    f" coalesce(greatest(last_vacuum, last_autovacuum), '-infinity') < now() - interval '{BY_HAND}'"
    f" OR coalesce(greatest(last_analyze, last_autoanalyze), '-infinity') "
    f"    < now() - interval '{BY_HAND}') ORDER BY relname"
)


def vacuum_check(conn: Any) -> tuple[bool, str]:
    """``(ok, detail)`` for the store's tables on the psycopg connection
    ``conn``."""
    row = conn.execute(_SERVER_ON).fetchone()
    server_on = bool(row[0])
    tables = conn.execute(_TABLES).fetchall()
    off = [name for name, disabled in tables if disabled or not server_on]
    if not off:
        return True, "autovacuum on"
    stale = [r[0] for r in conn.execute(_STALE, (off,)).fetchall()]
    where = (
        "on the server (autovacuum or track_counts off)"
        if not server_on
        else ("for " + ", ".join(off))
    )
    if not stale:
        return True, f"autovacuum off {where}; vacuumed and analysed by hand within {BY_HAND}"
    return False, (
        f"autovacuum off {where}, and {', '.join(stale)} not vacuumed and analysed "
        f"within {BY_HAND}: every transition leaves a row version the claims' search "
        "reads until a vacuum removes it (14.5 ms a search after 100,000 jobs instead "
        "of 0.1 ms) and the planner has no statistics. Turn autovacuum on, or run "
        "`vacuumdb --analyze` on the database at least daily"
    )
