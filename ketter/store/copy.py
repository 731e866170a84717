"""``ketter db copy``: move a node's SQLite job store into PostgreSQL (issue
#18 item 7).

Every table of the SQLite store (jobs, events with their chain, manifests,
route status, heartbeats, counters, API tokens, …; whatever the store has)
is copied, row for row and with the same ids, into an EMPTY PostgreSQL
database, first migrated to the same schema: all of it in ONE transaction,
so a failure leaves the database as empty as it was. The id sequences are
set past the copied rows, the row counts of every table and every event
hash are compared before the commit, and the migrations applied must be the
same on both sides (a store that is behind is refused: ``ketter db upgrade``
first).

Not copied: the Huey queue's pending messages. They are transport, never
the truth: every job they would ring is a row in ``jobs``, and the sweep of
the workers started on the copy re-rings the waiting ones.

Refused: a database that holds any table (copying twice, or onto a store in
use), and a node whose workers or watcher are running (a fresh heartbeat:
the store would change under the copy) unless ``force``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee

#: Components whose fresh heartbeat means the store is in use: the API
#: writes to it too (a submitted transfer, a re-queue, a cancel), and it is
#: not part of ``ketter.target``.
LIVE_COMPONENTS = ("workers", "watcher", "api")
#: Rows sent to PostgreSQL per ``executemany``.
BATCH = 1000
#: The migrations' own table: filled by migrating the target, compared.
MIGRATIONS_TABLE = "schema_migration"


class CopyRefused(RuntimeError):
    """``ketter db copy`` will not copy: the message says why and what to do."""


@dataclass
class CopyReport:
    """What was copied: rows per table, the chain's length and digest."""

    where: str
    tables: dict[str, int] = field(default_factory=dict)
    migrations: list[str] = field(default_factory=list)
    events: int = 0
    chain_digest: str = ""
    #: The copy's last step began: its COMMIT (an error now leaves the
    #: outcome unknown, not "nothing committed").
    committing: bool = False


def _sqlite_tables(src: sqlite3.Connection) -> list[str]:
    rows = src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows if r[0] != MIGRATIONS_TABLE]


def _columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f'PRAGMA table_info("{table}")').fetchall()]


def live_components(src: sqlite3.Connection, *, now: float, stale: float) -> list[str]:
    """The workers', watcher's and API's heartbeats younger than ``stale``
    seconds, but for the last one of a clean stop (``"stopped": true`` in
    its details: the process wrote it on its way out). A process killed
    leaves a fresh ordinary one: it looks running until ``stale`` passes."""
    marks = ", ".join("?" for _ in LIVE_COMPONENTS)
    rows = src.execute(
        f"SELECT component, node, pid, ts, details FROM heartbeats WHERE component IN ({marks})",
        LIVE_COMPONENTS,
    ).fetchall()
    return [
        f"{component} of node {node} (pid {pid}, {now - ts:.0f} s ago)"
        for component, node, pid, ts, details in rows
        if now - ts < stale and not _stopped(details)
    ]


def _stopped(details: str | None) -> bool:
    try:
        parsed = json.loads(details or "{}")
    except ValueError:
        return False
    return isinstance(parsed, dict) and bool(parsed.get("stopped"))


def chain_digest(hashes: Iterable[str]) -> str:
    """One digest of the chain's hashes in order (compared across the copy)."""
    h = hashlib.sha256()
    for digest in hashes:
        h.update(digest.encode() + b"\n")
    return h.hexdigest()


def copy_store(
    sqlite_path: str,
    dsn: str,
    *,
    password: str | None = None,
    force: bool = False,
    stale: float = 60.0,
    now: float | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> CopyReport:
    """Copy the SQLite store at ``sqlite_path`` into the empty database
    ``dsn``; returns what was copied or raises :class:`CopyRefused`."""
    from ketter.store.postgres.db import shown_dsn

    where = shown_dsn(dsn)
    now = time.time() if now is None else now
    # A file URI built by pathlib: a '#', '?' or '%' in the path is escaped
    # (pasted as is, SQLite cut the path there, dropped mode=ro and opened
    # another file read-write).
    uri = Path(sqlite_path).absolute().as_uri() + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise CopyRefused(f"cannot open the SQLite job store {sqlite_path}: {exc}") from exc
    try:
        return _copy_from(src, uri, dsn, sqlite_path, where, password, force, stale, now, say)
    except sqlite3.Error as exc:
        # Not a database, locked, unreadable: said in one line. Every read
        # of the store comes before the copy's COMMIT: the PostgreSQL side
        # rolled back (the error left its block).
        raise CopyRefused(f"cannot read the SQLite job store {sqlite_path}: {exc}") from exc
    finally:
        src.close()


def _copy_from(
    src: sqlite3.Connection,
    uri: str,
    dsn: str,
    sqlite_path: str,
    where: str,
    password: str | None,
    force: bool,
    stale: float,
    now: float,
    say: Callable[[str], None],
) -> CopyReport:
    from ketter.store.postgres.db import connect

    # One read transaction: the copy is one moment of the store.
    src.execute("BEGIN")
    tables = _sqlite_tables(src)
    if "jobs" not in tables or "events" not in tables:
        raise CopyRefused(f"{sqlite_path} is not a Ketter job store (no jobs/events table)")
    live = live_components(src, now=now, stale=stale)
    if live and not force:
        raise CopyRefused(
            f"the node's services are running ({'; '.join(live)}): stop "
            "`ketter workers`, `ketter watcher` and `ketter api` first (systemctl "
            "stop ketter.target ketter-api), or pass --force to copy a store that "
            "may change under the copy"
        )
    src_migrations = [
        r[0] for r in src.execute(f'SELECT name FROM "{MIGRATIONS_TABLE}" ORDER BY name')
    ]
    # The store's newest event and its jobs' count as copied, read again
    # just before the commit on a connection of its own, outside the copy's
    # snapshot: a one-off command (`ketter transfer`, `token create`) writes
    # without a heartbeat.
    copied_at = _moment(src)

    def moved() -> str | None:
        fresh = sqlite3.connect(uri, uri=True)
        try:
            now_at = _moment(fresh)
        finally:
            fresh.close()
        if now_at == copied_at:
            return None
        return (
            f"the SQLite store {sqlite_path} changed during the copy (events "
            f"{copied_at[0]} → {now_at[0]}, jobs {copied_at[1]} → {now_at[1]}): writes "
            "after the copy began would be missing from it. Stop every Ketter command "
            "on this node and copy again"
        )

    db = connect(dsn, password=password)
    try:
        return _copy(src, db, tables, src_migrations, where, sqlite_path, say, moved, force)
    finally:
        db.close()


def _moment(src: sqlite3.Connection) -> tuple[int, int]:
    """The newest event's id and the number of jobs: whether a store moved."""
    events = src.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    jobs = src.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    return int(events), int(jobs)


def _copy(
    src: sqlite3.Connection,
    db: Any,
    tables: list[str],
    src_migrations: list[str],
    where: str,
    sqlite_path: str,
    say: Callable[[str], None],
    moved: Callable[[], str | None],
    force: bool,
) -> CopyReport:
    import psycopg

    from ketter.store.postgres.db import pending_migrations
    from ketter.store.postgres.errors import FlushFailed

    report = CopyReport(where)
    try:
        existing = [
            r[0]
            for r in db.execute_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename"
            ).fetchall()
        ]
    except (psycopg.Error, peewee.DatabaseError) as exc:
        # peewee wraps the driver's errors (a refused connection, a wrong
        # password) in its own.
        raise CopyRefused(f"cannot reach the database {where}: {str(exc).strip()}") from exc
    if existing:
        shown = ", ".join(existing[:5]) + (" …" if len(existing) > 5 else "")
        raise CopyRefused(
            f"the database {where} is not empty ({len(existing)} table(s): {shown}): "
            "`ketter db copy` writes only into an empty database (create a new one, "
            "e.g. `createdb -O ketter ketter`); a store copied already is not copied again"
        )
    try:
        wanted = pending_migrations(db)
    except (psycopg.Error, peewee.DatabaseError) as exc:
        raise CopyRefused(f"cannot read the database {where}: {str(exc).strip()}") from exc
    behind = sorted(set(wanted) - set(src_migrations))
    if behind:
        raise CopyRefused(
            f"the SQLite store {sqlite_path} is older than this Ketter (not applied: "
            f"{', '.join(behind)}); run `ketter db upgrade` on this node first"
        )
    ahead = sorted(set(src_migrations) - set(wanted))
    if ahead:
        raise CopyRefused(
            f"the SQLite store {sqlite_path} has migrations this Ketter does not know "
            f"({', '.join(ahead)}): copy with the Ketter version that wrote it"
        )
    try:
        _copy_in_one_transaction(src, db, tables, wanted, report, where, say, moved, force)
    except FlushFailed as exc:
        raise CopyRefused(
            f"the copy into {where} was committed, but the server's WAL flush after it "
            f"failed ({exc.__cause__ or exc}): a crash of the server before its next "
            "flush may lose it. Check the server, then `ketter audit verify` on the new "
            "store (or copy again into a new empty database)"
        ) from exc
    except (psycopg.Error, peewee.DatabaseError) as exc:
        if report.committing:
            raise CopyRefused(
                f"the copy's COMMIT into {where} failed ({str(exc).strip()}): whether it "
                "was committed is not known. Run `ketter db copy` again: it copies into "
                "an empty database, and refuses one that holds the copy (not empty)"
            ) from exc
        raise CopyRefused(
            f"copying into {where} failed, nothing was committed: {str(exc).strip()}"
        ) from exc
    return report


def _copy_in_one_transaction(
    src: sqlite3.Connection,
    db: Any,
    tables: list[str],
    wanted: list[str],
    report: CopyReport,
    where: str,
    say: Callable[[str], None],
    moved: Callable[[], str | None],
    force: bool,
) -> None:
    from ketter.store.postgres.db import upgrade

    # Durable: the operator may remove the SQLite store once this says done.
    db.begin_durable()
    with db.atomic():
        report.migrations = upgrade(db)
        if sorted(report.migrations) != sorted(wanted):
            # Another process migrated the database since it was found empty:
            # it is someone's store now, not this copy's.
            raise CopyRefused(
                f"the database {where} was migrated by another process during the copy "
                f"(this copy applied {len(report.migrations)} of {len(wanted)} "
                "migrations): nothing was committed; copy into a new empty database"
            )
        say(f"{where}: schema created ({len(report.migrations)} migrations)")
        target_columns = _target_columns(db)
        for table in tables:
            report.tables[table] = _copy_table(src, db, table, target_columns, where)
            say(f"{table}: {report.tables[table]} row(s)")
        _fix_sequences(db, list(report.tables))
        _compare(src, db, report, where)
        changed = moved()
        if changed is not None:
            if not force:
                raise CopyRefused(f"{changed}; nothing was committed")
            say(f"warning: {changed} (--force: copied as it was when the copy began)")
        report.committing = True


def _target_columns(db: Any) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for table, column in db.execute_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    ).fetchall():
        found.setdefault(table, set()).add(column)
    return found


def _copy_table(
    src: sqlite3.Connection,
    db: Any,
    table: str,
    target_columns: dict[str, set[str]],
    where: str,
) -> int:
    import psycopg

    columns = _columns(src, table)
    have = target_columns.get(table)
    if have is None:
        raise CopyRefused(f"table {table} of the SQLite store has no counterpart in {where}")
    missing = [c for c in columns if c not in have]
    if missing:
        raise CopyRefused(
            f"table {table}: column(s) {', '.join(missing)} of the SQLite store are not in "
            f"{where} (a schema this Ketter does not know)"
        )
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("%s" for _ in columns)
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({marks})'
    cursor = src.execute(f'SELECT {names} FROM "{table}" ORDER BY rowid')
    count = 0
    pg = db.cursor()
    # No trigger fires while the rows go in (in this transaction only: the
    # tables are new, no one else sees them yet): every table is copied as it
    # is, the ones triggers fill (job_counts) from the source too. The
    # counters' triggers on jobs updated the same few job_counts rows once
    # per job, and PostgreSQL walks a row's versions made in one transaction
    # at every update: the copy grew with the square of the jobs (80,000
    # jobs 17.3 s, 20,000 1.8 s).
    db.execute_sql(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
    try:
        while True:
            rows = cursor.fetchmany(BATCH)
            if not rows:
                break
            pg.executemany(insert, rows)
            count += len(rows)
    except (psycopg.Error, peewee.DatabaseError) as exc:
        # Which table, and about which rows: PostgreSQL's message names
        # neither (a value out of its column's range, say).
        raise CopyRefused(
            f"copying table {table} into {where} failed after {count} row(s), at one of "
            f"rows {count + 1}–{count + BATCH}: {str(exc).strip()}; nothing was committed"
        ) from exc
    db.execute_sql(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
    return count


def _fix_sequences(db: Any, tables: list[str]) -> None:
    """Set every serial/identity sequence past the copied ids: the next job,
    event or token gets the next id, not 1 (a duplicate key)."""
    rows = db.execute_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND (column_default LIKE 'nextval(%%' "
        "OR is_identity = 'YES')"
    ).fetchall()
    for table, column in rows:
        if table not in tables:
            continue
        db.execute_sql(
            f"SELECT setval(pg_get_serial_sequence(%s, %s), "
            f'GREATEST(COALESCE(MAX("{column}"), 0), 1), COALESCE(MAX("{column}"), 0) > 0) '
            f'FROM "{table}"',
            (f'"{table}"', column),
        )


def _same_chains(src: sqlite3.Connection, db: Any, where: str) -> Iterator[str]:
    """Each event's hash in order, the same on both sides, or
    :class:`CopyRefused` at the first that differs (or is missing)."""
    ours = src.execute("SELECT hash FROM events ORDER BY id")
    theirs = db.connection().cursor(name="ketter_copy_chain")
    theirs.itersize = BATCH
    try:
        theirs.execute("SELECT hash FROM events ORDER BY id")
        for same, (here, there) in enumerate(itertools.zip_longest(ours, theirs)):
            if here is None or there is None or here[0] != there[0]:
                raise CopyRefused(
                    f"the events' hashes in {where} differ from the SQLite store's after "
                    f"the copy (from the event after the {same}th on); nothing was "
                    "committed"
                )
            yield str(here[0])
    finally:
        theirs.close()


def _compare(src: sqlite3.Connection, db: Any, report: CopyReport, where: str) -> None:
    """Row counts of every table and the chain's hashes, before the commit."""
    for table, copied in report.tables.items():
        there = db.execute_sql(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        here = src.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        if not here == there == copied:
            raise CopyRefused(
                f"table {table}: {here} row(s) in the SQLite store, {there} in {where} "
                "after the copy; nothing was committed"
            )
    # Both chains walked side by side, a batch at a time (a million jobs'
    # events do not all sit in memory twice): PostgreSQL's through a
    # server-side cursor in the copy's own transaction.
    report.chain_digest = chain_digest(_same_chains(src, db, where))
    report.events = report.tables["events"]  # as many as compared above
    applied = sorted(
        r[0] for r in db.execute_sql(f'SELECT name FROM "{MIGRATIONS_TABLE}"').fetchall()
    )
    mine = sorted(r[0] for r in src.execute(f'SELECT name FROM "{MIGRATIONS_TABLE}"'))
    if applied != mine:
        raise CopyRefused(
            f"the migrations applied in {where} differ from the SQLite store's; nothing "
            "was committed"
        )
