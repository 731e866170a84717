"""``ketter db copy`` (issue #18 item 7): a SQLite node with real history
(transfers by ``ketter run``, a token, a held route) copied into an empty
PostgreSQL database; the copy is the same store (every table's rows, every
event hash), the node runs on it (``audit verify``, ``status``, ``jobs``,
``token list``, a new transfer gets the next id), and a second copy, a copy
while the services run, are refused."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ketter.audit.chain import AuditChain
from ketter.store.copy import BATCH, CopyRefused, _same_chains, chain_digest, copy_store
from ketter.store.postgres.db import connect
from ketter.store.sqlite import open_job_store
from tests.conftest import KETTER, cli_env

CONFIG = """\
state_dir: {root}/state
node: n1
lease: {{ttl: 5s, heartbeat: 1s, sweep_interval: 1s}}
routes:
  - {{name: copy, source: {root}/in/copy, destination: {root}/out/copy,
     stable_seconds: 0.5, poll_interval: 0.2s}}
  - {{name: move, source: {root}/in/move, destination: {root}/out/move, mode: move,
     stable_seconds: 0.5, poll_interval: 0.2s}}
"""


def _ketter(config: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETTER, "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=180,
        **kw,
    )


def _wait(predicate: Any, what: str, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"ketter run exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _empty_database(pg_cluster: Any, name: str) -> str:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return str(pg_cluster.dsn(name))


def _sqlite_rows(path: Path) -> tuple[dict[str, int], list[tuple[int, str]]]:
    con = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        counts = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        hashes = con.execute("SELECT id, hash FROM events ORDER BY id").fetchall()
    finally:
        con.close()
    return counts, hashes


def _job_counts_sqlite(path: Path) -> list[tuple[str, str, int, int]]:
    con = sqlite3.connect(path)
    try:
        return _job_counts(con)
    finally:
        con.close()


def _job_counts(conn: Any) -> list[tuple[str, str, int, int]]:
    rows = conn.execute(
        "SELECT route, state, jobs, bytes FROM job_counts WHERE jobs > 0 ORDER BY route, state"
    ).fetchall()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def test_copy_a_sqlite_node_into_postgresql(pg_cluster: Any, tmp_path: Path) -> None:
    config = tmp_path / "ketter.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    dsn = _empty_database(pg_cluster, "ketter_copy_target")
    proc = subprocess.Popen(
        [*KETTER, "--config", str(config), "run", "--create-folders"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("Ketter is running")
        for i in range(3):
            (tmp_path / "in" / "copy" / f"clip{i}.mov").write_bytes(os.urandom(100_000 + i))
        (tmp_path / "in" / "move" / "mix.wav").write_bytes(b"mix" * 5000)
        _wait(
            lambda: (
                all((tmp_path / "out" / "copy" / f"clip{i}.mov").exists() for i in range(3))
                and (tmp_path / "out" / "move" / "mix.wav").exists()
                and not (tmp_path / "in" / "move" / "mix.wav").exists()
            ),
            "the deliveries",
            proc,
        )
        # The services run: the store would change under the copy.
        running = _ketter(config, "db", "copy", "--to", dsn)
        assert running.returncode == 2, running
        assert "services are running" in running.stderr and "--force" in running.stderr
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    token = _ketter(config, "token", "create", "--scopes", "metrics:read", "ci-reader")
    assert token.returncode == 0, token.stderr
    held = _ketter(config, "pause", "--reason", "moving the node", "copy")
    assert held.returncode == 0, held.stderr
    counts, hashes = _sqlite_rows(tmp_path / "state" / "ketter.db")
    assert counts["jobs"] == 4 and len(hashes) > 20 and counts["api_tokens"] == 1
    job_counts = _job_counts_sqlite(tmp_path / "state" / "ketter.db")
    assert sum(jobs for _, _, jobs, _ in job_counts) == 4

    # Stopped cleanly a moment ago: the heartbeats are fresh but say so, and
    # the copy needs no --force (a killed node's would; see below).
    copied = _ketter(config, "db", "copy", "--to", dsn)
    assert copied.returncode == 0, copied.stderr
    assert f"{len(hashes)} events" in copied.stdout

    with psycopg.connect(dsn) as conn:
        for table, rows in counts.items():
            there = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
            assert there == (rows,), table
        assert conn.execute("SELECT id, hash FROM events ORDER BY id").fetchall() == hashes
        # The counts per route and state are the source's (the triggers
        # that keep them are off while the jobs go in, on again after).
        assert _job_counts(conn) == job_counts
        # Byte paths survive as bytes.
        paths = conn.execute("SELECT source_path FROM jobs ORDER BY id").fetchall()
    assert bytes(paths[0][0]).startswith(os.fsencode(tmp_path))

    moved = tmp_path / "moved.yaml"
    moved.write_text(
        CONFIG.format(root=tmp_path) + f"store: {{backend: postgresql, dsn: '{dsn}'}}\n"
    )
    verified = _ketter(moved, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    status = _ketter(moved, "status")
    assert status.returncode == 0, status.stderr
    assert "moving the node" in status.stdout
    jobs = _ketter(moved, "jobs", "--json")
    assert jobs.returncode == 0, jobs.stderr
    assert len(json.loads(jobs.stdout)) == 4
    tokens = _ketter(moved, "token", "list")
    assert tokens.returncode == 0 and "ci-reader" in tokens.stdout, tokens
    # The sequences go on after the copied ids.
    (tmp_path / "late.wav").write_bytes(b"late" * 100)
    late = _ketter(moved, "transfer", "--json", str(tmp_path / "late.wav"), str(tmp_path / "out"))
    assert late.returncode == 0, late.stderr
    with psycopg.connect(dsn) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY id").fetchall()]
        top = conn.execute("SELECT MAX(id) FROM events").fetchone()
        counted = sum(jobs for _, _, jobs, _ in _job_counts(conn))
    assert ids == [*range(1, 5), 5]
    assert counted == 5  # the new job counted: the triggers work again
    assert top is not None and top[0] > len(hashes)
    assert _ketter(moved, "audit", "verify").returncode == 0

    again = _ketter(config, "db", "copy", "--to", dsn, "--force")
    assert again.returncode == 2, again
    assert "is not empty" in again.stderr


def test_copy_refuses_a_bad_dsn_and_a_missing_store(tmp_path: Path) -> None:
    config = tmp_path / "ketter.yaml"
    config.write_text(f"state_dir: {tmp_path}/state\nnode: n1\n")
    bad = _ketter(config, "db", "copy", "--to", "mysql://x@y/z")
    assert bad.returncode == 2 and "--to" in bad.stderr, bad
    missing = _ketter(config, "db", "copy", "--to", "postgresql://k@127.0.0.1:1/k")
    assert missing.returncode == 2 and "no SQLite job store" in missing.stderr, missing
    # A store, and a server that is not there: said in a line, no traceback.
    assert _ketter(config, "db", "upgrade").returncode == 0
    unreachable = _ketter(config, "db", "copy", "--to", "postgresql://k@127.0.0.1:1/k")
    assert unreachable.returncode == 2, unreachable
    assert "cannot reach the database" in unreachable.stderr, unreachable
    assert "Traceback" not in unreachable.stderr, unreachable.stderr


def test_the_chains_are_compared_event_by_event(pg_cluster: Any) -> None:
    """The check before the commit walks both chains side by side (a batch
    at a time, not all in memory): the same hashes give the digest of the
    whole chain; one that differs, or one missing on either side, refuses."""
    hashes = [f"{i:064x}" for i in range(BATCH * 2 + 5)]
    db = connect(_empty_database(pg_cluster, "ketter_copy_chains"))
    db.execute_sql("CREATE TABLE events (id integer PRIMARY KEY, hash text NOT NULL)")
    db.execute_sql(
        "INSERT INTO events SELECT i, lpad(to_hex(i - 1), 64, '0') FROM generate_series(1, %s) i",
        (len(hashes),),
    )

    def walk(ours: list[str]) -> str:
        src = sqlite3.connect(":memory:")
        src.execute("CREATE TABLE events (id integer PRIMARY KEY, hash text)")
        src.executemany("INSERT INTO events VALUES (?, ?)", list(enumerate(ours, start=1)))
        with db.atomic():
            return chain_digest(_same_chains(src, db, "the target"))

    assert walk(hashes) == chain_digest(hashes)
    changed = [*hashes[:-3], "f" * 64, *hashes[-2:]]
    with pytest.raises(CopyRefused, match=f"after the {len(hashes) - 3}th"):
        walk(changed)
    with pytest.raises(CopyRefused):
        walk(hashes[:-1])  # one event fewer here
    with pytest.raises(CopyRefused):
        walk([*hashes, "e" * 64])  # one more here
    db.close()


def _small_store(path: Path, events: int = 3) -> None:
    """A real SQLite job store (migrated by the store itself) with a few events."""
    store = open_job_store(path, AuditChain(node="n1"))
    try:
        for i in range(events):
            with store.transaction():
                store.append_event("detect", now=1000.0 + i, job_id=None, route="r")
    finally:
        store.close()


def test_a_store_path_with_url_characters_is_copied_read_only(
    pg_cluster: Any, tmp_path: Path
) -> None:
    """'#', '?' and '%' in the store's path: the file URI escapes them (pasted
    as is, SQLite cut the path at '#', dropped mode=ro and opened another file
    read-write)."""
    folder = tmp_path / "st#a?b%20c" / "state"
    folder.mkdir(parents=True)
    _small_store(folder / "ketter.db")
    before = set(tmp_path.rglob("*"))
    report = copy_store(str(folder / "ketter.db"), _empty_database(pg_cluster, "ketter_url"))
    assert report.events == 3 and report.tables["events"] == 3
    # No stray file (the path cut at '#' was tmp_path/"st"): only SQLite's own
    # files of the store itself, next to it.
    new = set(tmp_path.rglob("*")) - before
    assert all(p.parent == folder and p.name.startswith("ketter.db-") for p in new), new


def test_a_copy_committed_whose_flush_failed_says_so(
    pg_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's commit is durable: its WAL flush goes with its COMMIT. When
    only the flush fails, the operator is told the copy is in and what to
    check, in one line (not a traceback, not "not known")."""
    from ketter.store.postgres import db as pg_db

    folder = tmp_path / "state"
    folder.mkdir()
    _small_store(folder / "ketter.db")
    dsn = _empty_database(pg_cluster, "ketter_flush")
    monkeypatch.setattr(pg_db, "_COMMIT_THEN_FLUSH", "COMMIT; BEGIN; SELECT 1/0; COMMIT")
    with pytest.raises(CopyRefused, match=r"was committed, but the server's WAL flush after it"):
        copy_store(str(folder / "ketter.db"), dsn)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3


def test_a_file_that_is_not_a_store_is_refused_in_one_line(pg_cluster: Any, tmp_path: Path) -> None:
    garbage = tmp_path / "ketter.db"
    garbage.write_bytes(b"not a database, " * 512)
    dsn = _empty_database(pg_cluster, "ketter_garbage")
    with pytest.raises(CopyRefused, match=r"cannot read the SQLite job store .*not a database"):
        copy_store(str(garbage), dsn)
    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
            == 0
        )


def test_a_row_postgresql_refuses_names_its_table(pg_cluster: Any, tmp_path: Path) -> None:
    path = tmp_path / "ketter.db"
    _small_store(path)
    store = open_job_store(path, AuditChain(node="n1"))
    try:
        job_id = store.add_job(
            {
                "route": "r",
                "mode": "copy",
                "kind": "file",
                "source_path": b"/in/a",
                "source_display": "/in/a",
                "dest_path": b"/out/a",
                "dest_display": "/out/a",
                "source_key": "k1",
                "size": 1,
                "file_count": 1,
                "state": "detected",
                "attempt": 0,
                "priority": 0,
                "bytes_done": 0,
                "node": "n1",
                "created_at": 1.0,
                "updated_at": 1.0,
            }
        )
    finally:
        store.close()
    with sqlite3.connect(path) as raw:  # a priority past PostgreSQL's integer
        raw.execute("UPDATE jobs SET priority = ? WHERE id = ?", (2**40, job_id))
    dsn = _empty_database(pg_cluster, "ketter_range")
    with pytest.raises(CopyRefused, match=r"copying table jobs into .* failed after 0 row"):
        copy_store(str(path), dsn)
    with psycopg.connect(dsn) as conn:  # nothing committed
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
            == 0
        )


def test_a_store_written_during_the_copy_is_refused_after_it(
    pg_cluster: Any, tmp_path: Path
) -> None:
    """A one-off command (no heartbeat) writes while the copy runs: refused
    before the commit (nothing in the database); with --force the copy is of
    the moment it began, with a warning."""
    path = tmp_path / "ketter.db"
    _small_store(path)
    writer = open_job_store(path, AuditChain(node="n1"))

    def say(line: str) -> None:
        if line.startswith("events:"):  # the events are copied: one more now
            with writer.transaction():
                writer.append_event("detect", now=2000.0, job_id=None, route="r")

    try:
        refused = _empty_database(pg_cluster, "ketter_moved")
        with pytest.raises(
            CopyRefused, match=r"changed during the copy \(events 3 → 4.*nothing was committed"
        ):
            copy_store(str(path), refused, say=say)
        with psycopg.connect(refused) as conn:
            tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            assert conn.execute(tables).fetchone()[0] == 0
        said: list[str] = []

        def forced(line: str) -> None:
            said.append(line)
            say(line)

        report = copy_store(
            str(path), _empty_database(pg_cluster, "ketter_forced"), say=forced, force=True
        )
        assert report.events == 4  # the moment the copy began (4: the refused run's)
        assert any(line.startswith("warning: the SQLite store") for line in said), said
    finally:
        writer.close()
