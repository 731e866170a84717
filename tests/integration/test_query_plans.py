"""Every query of the job store uses an index (#19, P6: a history of a
million jobs that costs nothing): ``EXPLAIN QUERY PLAN`` of

(a) every query of docs/operations.md ("Ten useful queries", taken from the
    page as ``test_operations_queries.py`` takes them);
(b) every statement the SQLite job store issues during a run of the contract
    suite (``tests/contract``, SQLite backend), recorded with ``sqlite3``'s
    trace callback (:mod:`tests.integration.store_sql_trace`): claims,
    sweeps, leases, intake, events, the metrics reads — what the code runs
    today, not a list kept by hand;
(c) the read model (:class:`ketter.store.sqlite_read.SqliteReadStore`):
    ``list_jobs`` with each filter, ``job_detail``, ``status``,
    ``health_facts``, ``events_after``, ``job_progress``, ``running_jobs``.

A plan fails on a ``SCAN`` of ``jobs`` or ``events`` (with or without an
index: a scan of a whole index is a read of every job too), under any alias.
A ``SCAN`` of a small table is fine: ``route_status`` and ``counters`` (a
row per route), ``heartbeats`` (a row per process), ``job_counts`` (a row
per route and state), ``api_tokens`` (a row per token). The few statements
that read the whole history by design are listed in :data:`WHOLE_HISTORY`,
each with why.

The plans are those of a store that has never been analysed (no
``sqlite_stat1``), as a node's store is: SQLite's own estimates.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.store.port import JobFilter
from ketter.store.sqlite import open_job_store
from ketter.store.sqlite_read import SqliteReadStore
from tests.integration.test_operations_queries import documented_queries
from tests.integration.test_operations_queries import store as ops_store  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
BIG = ("jobs", "events")
#: Statements that read every job or event on purpose (normalised shape → why).
WHOLE_HISTORY = {
    "SELECT COUNT(*) FROM jobs": "`audit verify` counts the jobs only when the audit chain is "
    "empty (a store emptied of its events, or a node that never ran)",
    "SELECT id FROM jobs WHERE ? ORDER BY id": "job_ids() without a filter lists every job: "
    "the contract suite calls it so; `ketter requeue` always passes state=failed",
    "SELECT j.id, j.state, e.id, e.to_state FROM jobs j": "`audit verify`'s job-state check "
    "compares every job with its last event (the check of a whole history)",
}
_SKIP = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|PRAGMA|SAVEPOINT|RELEASE|END)\b", re.I)


def shape(sql: str) -> str:
    """``sql`` with its values as ``?`` and lists of them as one: the
    statements the trace records have their parameters filled in."""
    sql = re.sub(r"X?'(?:[^']|'')*'", "?", sql)
    sql = re.sub(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?\b", "?", sql)
    sql = re.sub(r"\?(?:\s*,\s*\?)+", "?", sql)
    return " ".join(sql.split())


def aliases(sql: str) -> set[str]:
    """The names ``jobs`` and ``events`` go by in ``sql``."""
    names = set(BIG)
    for _table, alias in re.findall(r"\b(jobs|events)\s+(?:AS\s+)?(\w+)", sql, flags=re.I):
        if alias.upper() not in {"WHERE", "ORDER", "GROUP", "SET", "LIMIT", "ON", "LEFT", "JOIN"}:
            names.add(alias)
    return names


def full_scans(con: sqlite3.Connection, sql: str) -> list[str]:
    """The plan's steps that scan ``jobs`` or ``events`` (or a view over them)."""
    plan = [row[3] for row in con.execute("EXPLAIN QUERY PLAN " + sql)]
    views = " ".join(r[0] for r in con.execute("SELECT sql FROM sqlite_master WHERE type = 'view'"))
    names = aliases(sql + " " + views)
    return [step for step in plan if re.match(rf"SCAN ({'|'.join(names)})\b", step)]


def check(con: sqlite3.Connection, statements: list[str]) -> list[str]:
    """The statements (one per shape) whose plan scans a big table."""
    found: dict[str, str] = {}
    for sql in statements:
        if sql.strip() and not _SKIP.match(sql):
            found.setdefault(shape(sql), sql)
    bad = []
    for normal, sql in sorted(found.items()):
        if any(normal.startswith(known) for known in WHOLE_HISTORY):
            continue
        scans = full_scans(con, sql)
        if scans:
            bad.append(f"{normal}\n    plan: {scans}")
    return bad


def empty_store(tmp_path: Path) -> sqlite3.Connection:
    """A new, migrated job store (never analysed)."""
    store = open_job_store(tmp_path / "plans" / "ketter.db", AuditChain(node="n1"))
    store.close()
    return sqlite3.connect(tmp_path / "plans" / "ketter.db")


def test_the_documented_queries_use_indexes(ops_store: Path) -> None:  # noqa: F811
    con = sqlite3.connect(f"file:{ops_store}?mode=ro", uri=True)
    try:
        bad = check(con, documented_queries())
    finally:
        con.close()
    assert not bad, "docs/operations.md queries that read every job or event:\n" + "\n".join(bad)


@pytest.mark.slow
def test_what_the_store_issues_uses_indexes(tmp_path: Path) -> None:
    trace = tmp_path / "trace.sql"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.integration.store_sql_trace",
            "-k",
            "sqlite",
            "tests/contract",
        ],
        cwd=ROOT,
        env={**os.environ, "KETTER_SQL_TRACE": str(trace)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    statements = trace.read_text(encoding="utf-8").split("\0")
    shapes = {shape(s) for s in statements if s.strip()}
    # The run reached the hot paths (a trace that lost them would pass empty).
    for needed in ('UPDATE jobs SET "claim"', "INSERT INTO events", "FROM job_counts"):
        assert any(needed in s for s in shapes), f"no {needed!r} in the trace"
    con = empty_store(tmp_path)
    try:
        bad = check(con, statements)
    finally:
        con.close()
    assert not bad, "job-store statements that read every job or event:\n" + "\n".join(bad)


#: ``sqlite_stat1`` of the million-job store of ``make bench-history``
#: (``ANALYZE``): every job in one state, seven events a job.
MILLION_STATS = (
    ("jobs", "jobs_created", "1000008 1"),
    ("jobs", "jobs_route_id", "1000008 250002 1"),
    ("jobs", "jobs_state_id", "1000008 1000008 1"),
    ("jobs", "jobs_route_state_created", "1000008 250002 250002 1"),
    ("jobs", "jobs_source_key", "1000008 1"),
    ("events", "events_job_id", "7000058 7"),
)


def test_the_read_model_uses_indexes(ops_store: Path) -> None:  # noqa: F811
    con = sqlite3.connect(f"file:{ops_store}?mode=ro", uri=True)
    _check_read_model(con)


def test_the_read_model_uses_indexes_on_an_analysed_history(
    ops_store: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With the statistics of a million completed jobs (an operator who ran
    ``ANALYZE``), SQLite prefers a walk of ``jobs`` in id order over a sort:
    ``status``'s running jobs read every job that way (0.6-1.3 s)."""
    copy = tmp_path / "analysed.db"
    source = sqlite3.connect(f"file:{ops_store}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.execute("ANALYZE")
    target.execute("DELETE FROM sqlite_stat1 WHERE tbl IN ('jobs', 'events')")
    target.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", MILLION_STATS)
    target.commit()
    target.close()
    _check_read_model(sqlite3.connect(copy))


def _check_read_model(con: sqlite3.Connection) -> None:
    statements: list[str] = []
    con.set_trace_callback(statements.append)
    reads = SqliteReadStore(con.execute, con.close, "read-only")
    now = time.time()
    job_id = int(con.execute("SELECT MAX(id) FROM jobs").fetchone()[0])
    filters = [
        JobFilter(),
        JobFilter(state="failed"),
        JobFilter(route="busy"),
        JobFilter(routes=("busy", "share")),
        JobFilter(since=now - 3600),
        JobFilter(until=now),
        JobFilter(since=now - 3600, until=now),
        JobFilter(state="retry_wait", route="busy"),
    ]
    for f in filters:
        page = reads.list_jobs(f, 50)
        reads.list_jobs(f, 50, cursor=job_id)
        assert page.jobs or f.state == "failed", f
    assert reads.job_detail(job_id) is not None
    reads.status(now)
    reads.health_facts("n1")
    reads.events_after(0, 100)
    reads.job_progress(job_id, now)
    reads.running_jobs(now)
    con.set_trace_callback(None)
    try:
        bad = check(con, statements)
    finally:
        reads.close()
    assert not bad, "read-model queries that read every job or event:\n" + "\n".join(bad)


def test_a_full_scan_is_caught(tmp_path: Path) -> None:
    """The check itself: it sees a scan of jobs, also under an alias or a view."""
    con = empty_store(tmp_path)
    try:
        assert check(con, ["SELECT * FROM jobs WHERE error = 'x'"])
        assert check(con, ["SELECT j.id FROM jobs AS j WHERE j.md5 = 'x'"])
        assert check(con, ["SELECT * FROM job_history WHERE source = 'x'"])
        assert not check(con, ["SELECT * FROM jobs WHERE id = 3"])
        assert not check(con, ["SELECT * FROM route_status"])  # a small table
    finally:
        con.close()
