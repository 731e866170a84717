"""``ketter health``: each reason to be unhealthy, checked on a real job store."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import load_config
from ketter.health import check_health, connect_readonly
from ketter.jobs.routes import pause_route
from ketter.store import open_store
from ketter.store.models import database
from ketter.store.sqlite import SqliteJobStore
from ketter.watcher.heartbeat import beat
from tests.conftest import KETTER, cli_env


@pytest.fixture
def node(tmp_path: Path, write_config):
    for name in ("in", "out", "mv", "qc"):
        (tmp_path / name).mkdir()
    path = write_config(f"""
        state_dir: {tmp_path / 'state'}
        node: n1
        health: {{heartbeat_stale: 30s, min_free: 1}}
        routes:
          - {{name: copy, source: {tmp_path / 'in'}, destination: {tmp_path / 'out'}}}
          - {{name: move, source: {tmp_path / 'mv'}, destination: {tmp_path / 'qc'},
             mode: move}}
        """)
    config = load_config(path)
    db = open_store(config.db_path)
    Path(config.queue_path).touch()  # an empty file is a valid SQLite database
    yield config
    db.close()


def _store(config) -> SqliteJobStore:
    """The job store over the ``node`` fixture's open database."""
    return SqliteJobStore(database.obj, AuditChain(node=config.node))


def _beat_all(config, *, now: float, pid: int | None = None, workers: dict | None = None,
              lost: str | None = None) -> None:
    rows = {"watcher": {"routes": 2}, "workers": workers or {"workers": 4},
            "route:copy": {"lost": False}, "route:move": {"lost": False}}
    if lost:
        rows[f"route:{lost}"] = {"lost": True, "reason": "source_mount not mounted"}
    beat(_store(config), config.node, rows, now=now)
    if pid is not None:
        from ketter.store.models import Heartbeat

        Heartbeat.update(pid=pid).execute()


def _failed(report) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.ok}


def test_healthy(node) -> None:
    now = time.time()
    _beat_all(node, now=now)
    report = check_health(node, now=now + 1)
    assert report.healthy, report.text()
    names = [c.name for c in report.checks]
    assert names[:4] == ["queue database", "job store", "workers", "watcher"]
    assert "route copy" in names and "route move" in names
    assert report.as_dict()["problems"] == 0


def test_stale_stopped_and_dead_services(node) -> None:
    now = time.time()
    _beat_all(node, now=now - 31, workers={"stopped": True})
    failed = _failed(check_health(node, now=now))
    assert "stopped" in failed["workers"]
    assert "heartbeat_stale 30s" in failed["watcher"]

    proc = subprocess.Popen(["true"])
    proc.wait()
    _beat_all(node, now=now, pid=proc.pid)
    failed = _failed(check_health(node, now=now))
    assert f"pid {proc.pid}" in failed["watcher"] and "not running" in failed["watcher"]


def test_never_started(node) -> None:
    failed = _failed(check_health(node))
    assert "never run" in failed["workers"] and "never run" in failed["watcher"]
    assert "has not reported" in failed["route copy"]


def test_paused_and_lost_routes(node) -> None:
    now = time.time()
    _beat_all(node, now=now, lost="copy")
    pause_route(_store(node), "move", "destination_mount /mnt/qc is not mounted", now=now)
    failed = _failed(check_health(node, now=now))
    assert failed["route copy"] == "source not watchable: source_mount not mounted"
    assert "paused since" in failed["route move"] and "/mnt/qc" in failed["route move"]
    assert set(failed) == {"route copy", "route move"}


def test_destination_short_of_space(node, write_config, tmp_path: Path) -> None:
    text = Path(node.path).read_text().replace("min_free: 1}", "min_free: 99.9%}")
    config = load_config(write_config(text, name="full.yaml"))
    _beat_all(config, now=time.time())
    failed = _failed(check_health(config))
    assert any(name.startswith("free space") and "NOT above" in detail
               for name, detail in failed.items())


def test_missing_store(tmp_path: Path, write_config) -> None:
    config = load_config(write_config(f"state_dir: {tmp_path / 'nothing'}\n"))
    report = check_health(config)
    assert not report.healthy
    assert "does not exist" in _failed(report)["job store"]


def test_connect_readonly_never_writes(node) -> None:
    conn, how = connect_readonly(node.db_path)
    with pytest.raises(Exception, match="readonly"):
        conn.execute("DELETE FROM heartbeats")
    conn.close()
    assert how == "read-only"


def test_cli_exit_codes_and_json(node) -> None:
    env = cli_env()
    unhealthy = subprocess.run([*KETTER, "--config", node.path, "health", "--json"],
                               env=env, capture_output=True, text=True)
    assert unhealthy.returncode == 1
    assert json.loads(unhealthy.stdout)["healthy"] is False
    _beat_all(node, now=time.time())
    healthy = subprocess.run([*KETTER, "--config", node.path, "health"], env=env,
                             capture_output=True, text=True)
    assert healthy.returncode == 0, healthy.stdout
    assert healthy.stdout.rstrip().endswith("healthy")
    bad = subprocess.run([*KETTER, "--config", os.devnull, "health"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2  # invalid config
