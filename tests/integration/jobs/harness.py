"""A real Ketter node in a temporary folder: config, sources, `ketter` subprocesses."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import cli_env

KETTER = [sys.executable, "-m", "ketter"]

CONFIG = """\
state_dir: state
node: test-node
workers: 2
shutdown_timeout: 10s
resume_min_bytes: 1MiB
lease: {{ttl: 2s, heartbeat: 0.5s, sweep_interval: 0.5s, stall_timeout: 60s}}
retry: {{max_attempts: {max_attempts}, base_delay: 0.2s, max_delay: 1s}}
routes:
  - {{name: copy, source: src/copy, destination: dst/copy, mode: copy,
     stable_seconds: 0.5, poll_interval: 0.2s}}
  - {{name: move, source: src/move, destination: dst/move, mode: move,
     stable_seconds: 0.5, poll_interval: 0.2s}}
  - {{name: renames, source: src/renames, destination: dst/renames, mode: move,
     conflict: rename, stable_seconds: 0.5, poll_interval: 0.2s}}
  - {{name: units, source: src/units, destination: dst/units, mode: move, folders: as_unit,
     package_min_files: 20, stable_seconds: 0.5, poll_interval: 0.2s}}
"""


class Node:
    """One Ketter installation under ``root``."""

    def __init__(self, root: Path, *, max_attempts: int = 6) -> None:
        self.root = root
        for route in ("copy", "move", "renames", "units"):
            (root / "src" / route).mkdir(parents=True, exist_ok=True)
            (root / "dst" / route).mkdir(parents=True, exist_ok=True)
        self.config = root / "ketter.yaml"
        self.config.write_text(CONFIG.format(max_attempts=max_attempts))
        self.db_path = root / "state" / "ketter.db"
        self.procs: list[subprocess.Popen] = []
        assert self.ketter("db", "upgrade").returncode == 0

    def ketter(self, *args: str, fault: str | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
        env = cli_env(**({"KETTER_FAULT": fault} if fault else {}))
        result = subprocess.run([*KETTER, "--config", str(self.config), *args],
                                capture_output=True, text=True, env=env, timeout=120)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def start_workers(self, *, fault: str | None = None, extra: tuple[str, ...] = (),
                      env: dict[str, str] | None = None) -> subprocess.Popen:
        environ = cli_env(**({"KETTER_FAULT": fault} if fault else {}), **(env or {}))
        log = open(self.root / f"workers-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([*KETTER, "--config", str(self.config), "workers", *extra],
                                stdout=log, stderr=log, env=environ)
        log.close()
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 60) -> None:
        """Until the workers process has started (its heartbeat row names it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = self.query("SELECT pid FROM heartbeats WHERE component='workers'")
            except sqlite3.OperationalError:
                rows = []
            if rows and rows[0][0] == proc.pid:
                return
            assert proc.poll() is None, f"workers exited with {proc.returncode}"
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)

    def stop(self, proc: subprocess.Popen, timeout: float = 60) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    # -- reading the job store -------------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def states(self) -> dict[int, str]:
        return dict(self.query("SELECT id, state FROM jobs"))

    def events(self, job_id: int | None = None) -> list[str]:
        if job_id is None:
            return [r[0] for r in self.query("SELECT event FROM events ORDER BY id")]
        return [r[0] for r in self.query("SELECT event FROM events WHERE job_id=? ORDER BY id",
                                         (job_id,))]

    def wait_for(self, predicate: Callable[[], bool], *, what: str,
                 idle_timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
        """Wait until ``predicate()``; fail after ``idle_timeout`` seconds
        without any new event in the job store (progress, not a deadline)."""
        last_seen = (-1, time.monotonic())
        while not predicate():
            (count,) = self.query("SELECT COUNT(*) FROM events")[0]
            if count != last_seen[0]:
                last_seen = (count, time.monotonic())
            elif time.monotonic() - last_seen[1] > idle_timeout:
                raise AssertionError(f"no progress for {idle_timeout}s waiting for {what}; "
                                     f"jobs: {self.states()}")
            if proc is not None and proc.poll() is not None and not predicate():
                raise AssertionError(f"process exited with {proc.returncode} while waiting "
                                     f"for {what}; jobs: {self.states()}")
            time.sleep(0.1)

    def all_done(self) -> bool:
        states = self.states()
        return bool(states) and all(s in ("completed", "failed") for s in states.values())


def temporaries(root: Path) -> list[str]:
    """Every Ketter temporary left anywhere under ``root``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.startswith(".ketter-"):
                found.append(os.path.join(dirpath, name))
    return found


def tree(root: Path) -> dict[str, bytes]:
    """Relative path → content of every file under ``root``, leaving out the
    ASC MHL manifests Ketter adds to delivered folders (``…/ascmhl/…``)."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if "ascmhl" not in Path(rel).parts:
                out[rel] = path.read_bytes()
    return out
