"""The SQL queries of docs/operations.md ("Ten useful queries") run, as
written there, with the ``sqlite3`` command on a real job store, and the
figures they give are those of the attempt that delivered.

The store is made by Ketter itself (``ketter transfer``: schema, migrations,
the ``job_history`` view, real deliveries with their measured
``transfer_seconds``). What only time makes — a job that waited minutes on a
paused route before the attempt that delivered it, a copy resumed after most
of it was written, a job waiting on a paused route, a retry, a superseded
job, a cancelled one — is staged on that store with SQL, since a test cannot wait for it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
KETTER = [sys.executable, "-m", "ketter"]


def _sqlite3() -> str:
    path = shutil.which("sqlite3")
    if path is None:
        pytest.fail("the sqlite3 command is missing: install the Debian package sqlite3")
    return path


def documented_queries() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### Ten useful queries", 1)[1].split("\n### ", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    assert len(queries) == 10, f"expected the ten queries of {DOC.name}, found {len(queries)}"
    return queries


def run_query(db: Path, sql: str, *mode: str) -> str:
    done = subprocess.run(
        [_sqlite3(), "-readonly", *mode, str(db)],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr, f"{sql}\n{done.stderr}"
    return done.stdout


def rows(db: Path, sql: str) -> list[dict[str, object]]:
    out = run_query(db, sql, "-json")
    return json.loads(out) if out.strip() else []


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A real job store with three real deliveries, then the staged cases."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    state = tmp_path / "state"
    for name, data in (("two.txt", b"hi"), ("big.bin", b"x" * 200_000), ("same.txt", b"s")):
        (tmp_path / "in" / name).write_bytes(data)
        done = subprocess.run(
            [
                *KETTER,
                "transfer",
                "--state-dir",
                str(state),
                str(tmp_path / "in" / name),
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert done.returncode == 0, done.stderr
    db = state / "ketter.db"
    con = sqlite3.connect(db)
    try:
        with con:
            ids = [r[0] for r in con.execute("SELECT id FROM jobs ORDER BY id")]
            assert len(ids) == 3
            two, big, same = ids
            # The 2-byte file waited 186.7 s on a paused route before the
            # attempt that delivered it (what issue #15 found ranked slowest).
            con.execute("UPDATE jobs SET started_at = completed_at - 186.7 WHERE id = ?", (two,))
            # A 8 GB file whose last attempt resumed and wrote 1 GB in 10 s.
            con.execute(
                "UPDATE jobs SET size = 8000000000, transfer_bytes = 1000000000, "
                "transfer_seconds = 10, started_at = completed_at - 900 WHERE id = ?",
                (big,),
            )
            # An identical file skipped: nothing copied, no time.
            con.execute(
                "UPDATE jobs SET transfer_bytes = 0, transfer_seconds = 0 WHERE id = ?", (same,)
            )

            def clone(route: str, state_: str, attempt: int, error: str) -> int:
                cur = con.execute(
                    "INSERT INTO jobs (route, mode, kind, source_path, source_display, "
                    "source_key, size, file_count, state, attempt, next_attempt_at, priority, "
                    "bytes_done, node, created_at, updated_at, started_at, error) "
                    "SELECT ?, mode, kind, source_path, source_display, source_key || ?, size, "
                    "file_count, ?, ?, updated_at + 60, priority, 0, node, created_at, "
                    "updated_at, started_at, ? FROM jobs WHERE id = ?",
                    (route, route, state_, attempt, error, two),
                )
                assert cur.lastrowid is not None
                return cur.lastrowid

            clone("share", "retry_wait", 1, "share gone: /mnt/share is not mounted")
            retrying = clone("busy", "retry_wait", 2, "checksum mismatch")
            clone("busy", "superseded", 2, "the source changed")
            clone("busy", "cancelled", 2, "cancelled by alice")  # #17: terminal, not a retry
            con.execute(
                "INSERT INTO route_status "
                "(route, paused, reason, since, updated_at, room_pauses, held) "
                "VALUES ('share', 1, 'share gone', 0, 0, 0, 0)"
            )
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    db.with_name("ids.json").write_text(
        json.dumps({"two": two, "big": big, "same": same, "retrying": retrying})
    )
    return db


def test_every_documented_query_runs(store: Path) -> None:
    for sql in documented_queries():
        run_query(store, sql, "-header", "-column")


def test_slowest_transfers_rank_the_attempt_that_delivered(store: Path) -> None:
    ids = json.loads(store.with_name("ids.json").read_text())
    found = rows(store, documented_queries()[3])
    assert found[0]["job_id"] == ids["big"]
    by_id = {r["job_id"]: r for r in found}
    assert by_id[ids["big"]]["seconds"] == 10 and by_id[ids["big"]]["mb_per_s"] == 100
    assert by_id[ids["big"]]["copied"] == 1_000_000_000
    assert float(str(by_id[ids["two"]]["seconds"])) < 5  # not its 186.7 s of waiting
    assert ids["same"] not in by_id  # nothing copied: no rate


def test_retries_leave_out_jobs_waiting_on_a_paused_route(store: Path) -> None:
    ids = json.loads(store.with_name("ids.json").read_text())
    found = rows(store, documented_queries()[4])
    assert [r["job_id"] for r in found] == [ids["retrying"]]


def test_throughput_is_bytes_written_over_transfer_time(store: Path) -> None:
    found = rows(store, documented_queries()[6])
    (route,) = found
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        written, seconds = con.execute(
            "SELECT SUM(transfer_bytes), SUM(transfer_seconds) FROM jobs "
            "WHERE state = 'completed' AND transfer_seconds > 0 AND transfer_bytes > 0"
        ).fetchone()
    finally:
        con.close()
    assert route["jobs"] == 2
    assert route["mb_per_s"] == round(written / seconds / 1e6, 1)
    assert float(str(route["mb_per_s"])) < 101  # not the 8 GB size over the resumed attempt
