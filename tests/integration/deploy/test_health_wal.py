"""``ketter health`` and the job store's write-ahead log: a read
transaction left open in a real ``sqlite3`` shell pins the log while the
store is written; health then fails with the part in use and names the
shell's process, and passes again once the shell has ended and the log has
started over (:mod:`ketter.store.wal_watch`)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ketter.store import open_store
from ketter.store.wal_watch import holders, wal_state
from tests.conftest import cli_env


def _health(config: Path) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "ketter", "--config", str(config), "health", "--json"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )
    assert run.returncode in (0, 1) and run.stdout, run.stdout + run.stderr
    return json.loads(run.stdout)


def _store_log(report: dict) -> dict:
    (check,) = [c for c in report["checks"] if c["name"] == "store log"]
    return check


_rows = itertools.count()


def _write(db, rows: int) -> None:
    """``rows`` heartbeats of 8 KiB each, one commit per 10: real writes
    through the store's own connection."""
    filler = json.dumps({"pad": "x" * 8192})
    for _ in range(0, rows, 10):
        with db.atomic():
            for _ in range(10):
                db.execute_sql(
                    "INSERT INTO heartbeats (component, node, pid, ts, details) "
                    "VALUES (?, 'n1', 1, ?, ?)",
                    (f"test:{next(_rows)}", time.time(), filler),
                )


def test_health_names_the_reader_that_pins_the_log(tmp_path: Path) -> None:
    assert shutil.which("sqlite3"), "the sqlite3 shell is installed by .ci/run"
    state = tmp_path / "state"
    config = tmp_path / "ketter.yaml"
    config.write_text(
        f"state_dir: {state}\nnode: n1\nhealth: {{min_free: 1, max_wal: 2MiB}}\n"
        "routes: []\n"
    )
    db = open_store(state / "ketter.db")
    path = str(state / "ketter.db")
    try:
        _write(db, 20)
        check = _store_log(_health(config))
        assert check["ok"], check
        assert "MiB in use" in check["detail"]

        # A forgotten shell inside a read transaction.
        shell = subprocess.Popen(
            ["sqlite3", "-readonly", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert shell.stdin is not None and shell.stdout is not None
            shell.stdin.write("BEGIN; SELECT count(*) FROM jobs;\n")
            shell.stdin.flush()
            assert shell.stdout.readline().strip() == "0"  # its snapshot is taken
            _write(db, 600)  # ~5 MiB: past the automatic checkpoint's 1,000 pages
            in_use = wal_state(path).in_use_bytes
            assert in_use is not None and in_use > 4 * 2**20, in_use
            assert shell.pid in dict(holders(path))
            check = _store_log(_health(config))
            assert not check["ok"], check
            assert "more than health.max_wal 2 MiB" in check["detail"]
            assert f"pid {shell.pid}: sqlite3 -readonly {path}" in check["detail"]
        finally:
            shell.stdin.close()  # type: ignore[union-attr]
            shell.wait(timeout=30)

        # The reader gone, the writers' own checkpoints start the log over.
        for _ in range(50):
            _write(db, 300)
            in_use = wal_state(path).in_use_bytes
            if in_use is not None and in_use <= 2 * 2**20:
                break
        check = _store_log(_health(config))
        assert check["ok"], check
    finally:
        db.close()
    assert os.path.exists(path)


def test_looking_at_the_log_keeps_this_process_readers_snapshot(tmp_path: Path) -> None:
    """SQLite's locks on the ``-shm`` file are the process's: closing any
    descriptor of it would drop them, and another process could then
    truncate the log under a read transaction of this one (the API serves
    ``/metrics`` beside its read connections)."""
    import sqlite3

    path = str(tmp_path / "ketter.db")
    db = open_store(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        _write(db, 20)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM heartbeats").fetchone()[0] == 20
        _write(db, 20)  # frames after the reader's snapshot
        for _ in range(3):
            assert (wal_state(path).in_use_bytes or 0) > 0
        other = subprocess.run(
            ["sqlite3", path, "PRAGMA wal_checkpoint(TRUNCATE);"],
            capture_output=True, text=True, timeout=30,
        )
        busy = other.stdout.strip().split("|")[0]
        assert busy == "1", f"the reader's snapshot was not honoured: {other.stdout!r}"
        assert reader.execute("SELECT count(*) FROM heartbeats").fetchone()[0] == 20
        reader.execute("COMMIT")
    finally:
        reader.close()
        db.close()
