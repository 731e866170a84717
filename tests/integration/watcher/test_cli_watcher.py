"""`ketter watcher` as a real process: detects, heartbeats, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from peewee import OperationalError

from ketter.queue import build_queue
from ketter.store import open_readonly
from tests.conftest import KETTER, cli_env
from tests.integration.watcher.support import make_config, wait_for, write


def _count(db_path: str, sql: str) -> int:
    """0 until the process has created the schema (it migrates at start)."""
    db = open_readonly(db_path)
    try:
        return int(db.execute_sql(sql).fetchone()[0])
    except OperationalError:  # "no such table": the migration is not done yet
        return 0
    finally:
        db.close()


def test_ketter_watcher_process(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"ingest": {}, "dub": {"watch": "polling"}})
    src = Path(config.route("ingest").source)
    write(src / "before.mov")
    proc = subprocess.Popen([*KETTER, "--config", config.path, "watcher"], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        db = config.db_path
        wait_for(lambda: Path(db).exists() and _count(
            db, "SELECT COUNT(*) FROM events WHERE event = 'watcher_started'"),
            message="watcher_started")
        write(src / "sub" / "live.mov")
        write(Path(config.route("dub").source) / "take1.wav")
        wait_for(lambda: _count(db, "SELECT COUNT(*) FROM jobs") == 3, message="three jobs")
        wait_for(lambda: _count(db, "SELECT COUNT(*) FROM heartbeats WHERE component IN "
                                    "('watcher', 'route:ingest', 'route:dub')") == 3,
                 message="heartbeats")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert _count(config.db_path, "SELECT COUNT(*) FROM events WHERE event = "
                                  "'watcher_stopped'") == 1
    queue = build_queue(config)
    try:
        assert queue.pending() == 3
    finally:
        queue.close()
    # operational logs are JSON lines on stderr
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert any(line.get("message") == "detected" for line in lines)
