"""After a clean stop of the watcher, ``ketter health`` says it stopped (not
"stopped or hung") and still fails, since nothing watches the routes
(issue #14 finding 19)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import KETTER, cli_env
from tests.integration.watcher.support import make_config, wait_for


def _watcher_beat(db_path: str) -> dict | None:
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            row = con.execute(
                "SELECT details FROM heartbeats WHERE component = 'watcher'"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # not created or migrated yet
        return None
    return json.loads(row[0]) if row else None


def test_health_after_a_clean_watcher_stop_says_stopped(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"ingest": {}})
    # A short heartbeat_stale, so the old "stopped or hung" would show at once.
    text = Path(config.path).read_text() + "health: {heartbeat_stale: 1s}\n"
    Path(config.path).write_text(text)
    proc = subprocess.Popen(
        [*KETTER, "--config", config.path, "watcher"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: Path(config.db_path).exists() and _watcher_beat(config.db_path),
            timeout=60,
            message="the watcher's first heartbeat",
        )
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    beat = _watcher_beat(config.db_path)
    assert beat is not None and beat.get("stopped") is True and beat.get("clean") is True

    def health() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KETTER, "--config", config.path, "health"],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    # Past heartbeat_stale (1 s): the row has aged and still reads as a clean stop.
    stopped = time.monotonic()
    wait_for(lambda: time.monotonic() - stopped > 2, message="heartbeat_stale to pass")
    out = health()
    both = out.stdout + out.stderr
    assert out.returncode != 0, both
    (line,) = [ln for ln in both.splitlines() if "watcher" in ln]
    assert "stopped cleanly" in line, both
    assert "hung" not in line, both
