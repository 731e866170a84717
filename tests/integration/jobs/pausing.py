"""A real node with one route for the route-pause tests (issue #14 findings 5
and 17): real mounts (root only), `ketter watcher` and `ketter workers`
subprocesses, conditions polled with generous deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env

CONFIG = """\
state_dir: {root}/state
node: test-node
workers: 1
shutdown_timeout: 10s
lease: {{ttl: 4s, heartbeat: 0.5s, sweep_interval: 0.3s, stall_timeout: 60s}}
retry: {{max_attempts: 3, base_delay: 0.2s, max_delay: 1s}}
routes:
  - {{name: r, source: {source}, destination: {destination}, mode: copy,
     stable_seconds: 0.3, poll_interval: 0.2s{extra}}}
"""


def mount(*args: str) -> None:
    """``mount ARGS``; skips the test (with the reason) where mounting is not
    allowed (not root, no CAP_SYS_ADMIN in this container)."""
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip()}); this test needs root")


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, capture_output=True)


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo", "rb") as fh:
        return any(line.split(b" ")[4] == os.fsencode(path) for line in fh)


@contextlib.contextmanager
def unmounted_at_exit(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        while mounted(path):
            subprocess.run(["umount", "-l", str(path)], check=False)


class Node:
    """One Ketter node under ``root`` with the single route ``r``."""

    def __init__(self, root: Path, source: Path, destination: Path, **extra: str) -> None:
        self.root = root
        self.config = root / "ketter.yaml"
        opts = "".join(f", {k}: '{v}'" for k, v in extra.items())
        self.config.write_text(
            CONFIG.format(root=root, source=source, destination=destination, extra=opts)
        )
        self.db_path = root / "state" / "ketter.db"
        self.procs: list[subprocess.Popen] = []
        assert self.ketter("db", "upgrade").returncode == 0

    def ketter(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*KETTER, "--config", str(self.config), *args],
            capture_output=True, text=True, env=cli_env(), timeout=120,
        )

    def start(self, command: str, **env: str) -> subprocess.Popen:
        log = open(self.root / f"{command}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*KETTER, "--config", str(self.config), command],
            stdout=log, stderr=log, env=cli_env(**env),
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        # Read-only: a read-write connection that closes last checkpoints and
        # removes the WAL under the services' feet (their store guard then
        # sees the store replaced).
        try:
            con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error:
            return []
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def job(self, name: str) -> tuple | None:
        """``(id, state, attempt, error)`` of the job of source file ``name``."""
        rows = self.query(
            "SELECT id, state, attempt, error FROM jobs WHERE source_display LIKE ? "
            "ORDER BY id DESC", (f"%/{name}",),
        )
        return rows[0] if rows else None

    def route_status(self) -> tuple | None:
        """``(paused, reason)`` of route ``r``."""
        rows = self.query("SELECT paused, reason FROM route_status WHERE route = 'r'")
        return rows[0] if rows else None

    def paused(self) -> bool:
        status = self.route_status()
        return bool(status and status[0])

    def events(self, name: str) -> list[tuple]:
        return self.query("SELECT job_id, details FROM events WHERE event = ? ORDER BY id",
                          (name,))

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.root.glob("*.log"))

    def wait_for(self, predicate: Callable[[], object], what: str,
                 timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for proc in self.procs:
                assert proc.poll() is None, (
                    f"{proc.args[-1]} exited while waiting for {what}:\n{self.logs()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}; jobs: "
                    f"{self.query('SELECT id, state, attempt, error FROM jobs')}; "
                    f"route: {self.route_status()}"
                )
            time.sleep(0.1)
