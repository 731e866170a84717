"""Shared-storage checks with real processes on PostgreSQL (issue #18 item
6): the first node's ``ketter run`` writes the route's markers; a second
node whose route roots are not that share (nothing mounted there) never
delivers into them. Its watcher does not watch the move route's source
(the watch is lost, with the path and both ids); with the source's share
there but not the destination's, its workers pause the route (the path and
both ids); its other route keeps working throughout, and once the right
share is there the route resumes by itself and delivers. Temporaries and
markers are never delivered."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ketter.jobs.shares import marker_name, read_marker
from tests.conftest import KETTER, cli_env

CONFIG = """\
state_dir: {root}/state
node: {node}
store: {{backend: postgresql, dsn: '{dsn}'}}
lease: {{ttl: 5s, heartbeat: 1s, sweep_interval: 0.5s}}
retry: {{base_delay: 0.2s, max_delay: 1s}}
routes:
  - {{name: dub, mode: move, source: {share}/src, destination: {share}/dst,
     stable_seconds: 0.3, poll_interval: 0.2s}}
{extra}"""

OTHER = """\
  - {{name: other, source: {root}/o-src, destination: {root}/o-dst,
     stable_seconds: 0.3, poll_interval: 0.2s}}
"""


def _write(root: Path, node: str, share: Path, dsn: str, other: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "ketter.yaml"
    extra = OTHER.format(root=root) if other else ""
    config.write_text(CONFIG.format(root=root, node=node, dsn=dsn, share=share, extra=extra))
    return config


def _run(config: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*KETTER, "--config", str(config), "run", "--create-folders"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("Ketter is running")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _wait(predicate: Any, what: str, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"ketter run exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _status(config: Path) -> str:
    done = subprocess.run(
        [*KETTER, "--config", str(config), "status"],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _health(config: Path) -> str:
    done = subprocess.run(
        [*KETTER, "--config", str(config), "health"],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )
    return done.stdout + done.stderr


def _states(dsn: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT source_display, state FROM jobs").fetchall()
    return {os.path.basename(name): state for name, state in rows}


def test_a_node_without_the_share_never_delivers_there(pg_dsn: str, tmp_path: Path) -> None:
    share, empty = tmp_path / "share", tmp_path / "n2-mnt"
    n1 = _write(tmp_path / "n1", "n1", share, pg_dsn)
    proc = _run(n1)
    try:
        (share / "src" / "a.wav").write_bytes(os.urandom(20_000))
        _wait(lambda: (share / "dst" / "a.wav").exists(), "n1's delivery", proc)
    finally:
        _stop(proc)
    name = marker_name("dub")
    ids = {side: read_marker(str(share / side / name)) for side in ("src", "dst")}
    assert all(ids.values()), ids
    assert sorted(os.listdir(share / "dst")) == sorted([name, "a.wav"])  # no leftover

    # n2 mounted nothing at the route's roots: empty local folders.
    n2 = _write(tmp_path / "n2", "n2", empty, pg_dsn, other=True)
    (empty / "src").mkdir(parents=True)
    (empty / "dst").mkdir(parents=True)
    (empty / "src" / "b.wav").write_bytes(b"b" * 5000)
    proc = _run(n2)
    try:
        # The source is not the share: not watched here, and said so.
        _wait(lambda: "marker" in _status(n2), "the route's watch to be lost", proc)
        status = _status(n2)
        assert str(empty / "src" / name) in status and str(ids["src"]) in status, status
        health = _health(n2)
        assert "route dub" in health and "source not watchable" in health, health
        # Its other route keeps working.
        (tmp_path / "n2" / "o-src" / "c.wav").write_bytes(b"c" * 5000)
        _wait(lambda: (tmp_path / "n2" / "o-dst" / "c.wav").exists(), "the other route", proc)
        assert "b.wav" not in _states(pg_dsn)  # never enqueued from a wrong source
        assert os.listdir(empty / "dst") == []  # nothing delivered, no marker written
        assert not (empty / "src" / name).exists()
        # The source's share there, not the destination's: the watcher
        # enqueues, the workers pause the route before writing anything.
        shutil.copy(share / "src" / name, empty / "src" / name)
        _wait(lambda: str(empty / "dst" / name) in _status(n2), "the route to pause", proc)
        status = _status(n2)
        assert str(empty / "dst" / name) in status and str(ids["dst"]) in status, status
        assert os.listdir(empty / "dst") == []
        # The right share mounted (its markers appear): resumed, delivered.
        shutil.copy(share / "dst" / name, empty / "dst" / name)
        _wait(lambda: (empty / "dst" / "b.wav").exists(), "the delivery after the fix", proc)
    finally:
        _stop(proc)
    assert (empty / "dst" / "b.wav").read_bytes() == b"b" * 5000
