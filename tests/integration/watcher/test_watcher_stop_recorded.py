"""``ketter watcher`` records its own start and stop as the workers do: a
``watcher_started`` and a ``watcher_stopped`` event in the chain (the
workers' shape: the ``pid``, and the config at start) and a "watcher
stopped" line in its log, when SIGTERM stops it (issue #15 section 2: the
watcher did not record its own stop in the log or the chain)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import KETTER, cli_env
from tests.integration.watcher.support import make_config, wait_for, write


def _events(db_path: str, name: str) -> list[dict]:
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT details FROM events WHERE event = ?", (name,)).fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # not created or migrated yet
        return []
    return [json.loads(details) for (details,) in rows]


def test_sigterm_records_the_watchers_stop_in_the_chain_and_the_log(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"ingest": {}})
    proc = subprocess.Popen(
        [*KETTER, "--config", config.path, "watcher"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _events(config.db_path, "watcher_started"), timeout=60,
                 message="watcher_started")
        write(Path(config.route("ingest").source) / "take1.mov")
        wait_for(lambda: _events(config.db_path, "detect"), timeout=60, message="a detection")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = err.decode(errors="replace")
    assert proc.returncode == 0, stderr
    (started,) = _events(config.db_path, "watcher_started")
    assert started["pid"] == proc.pid and started["config"] == config.path, started
    (stopped,) = _events(config.db_path, "watcher_stopped")
    assert stopped == {"pid": proc.pid, "jobs_created": 1}, stopped
    lines = [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]
    (line,) = [ln for ln in lines if ln["message"] == "watcher stopped"]
    assert line["process.pid"] == proc.pid and line["log.level"] == "info", line
    assert line["ketter.jobs_created"] == 1, line
    # The chain, the watcher's events in it, verifies.
    done = subprocess.run([*KETTER, "--config", config.path, "audit", "verify", "--db"],
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
