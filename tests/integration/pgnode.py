"""Ketter nodes on a PostgreSQL job store as real processes (issue #18):
``ketter watcher`` and ``ketter workers`` started with ``subprocess`` on a
throw-away cluster (``pg_dsn``, tests/pg.py).

One node (tests/integration/test_postgres_node.py) or several on one
machine (tests/integration/test_postgres_campaign.py): each node has its own
folder (its ``ketter.yaml``, its ``state_dir``, its processes' logs), its
own ``node:`` name, and every node of a test shares the same DSN and the
same route folders under ``shares``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import KETTER, cli_env

CONFIG = """\
state_dir: {root}/state
node: {node}
workers: {workers}
shutdown_timeout: 10s
lease: {{ttl: {ttl}, heartbeat: 0.5s, sweep_interval: 0.3s, stall_timeout: 60s}}
retry: {{max_attempts: {max_attempts}, base_delay: 0.2s, max_delay: 1s}}
health: {{min_free: 0}}
store: {{backend: postgresql, dsn: '{dsn}'}}
routes:
  - {{name: copies, source: {shares}/in-copy, destination: {shares}/out-copy, mode: copy,
     conflict: {conflict}, stable_seconds: 0.3, poll_interval: 0.2s}}
  - {{name: moves, source: {shares}/in-move, destination: {shares}/out-move, mode: move,
     stable_seconds: 0.3, poll_interval: 0.2s}}
"""

#: The route folders under ``shares``.
FOLDERS = ("in-copy", "out-copy", "in-move", "out-move")
MiB = 2**20
#: The name a route root's share marker starts with (several nodes check
#: that they see the same share): in a route root on purpose, not a leftover.
SHARE_MARKER = ".ketter-share-"
DEADLINE = 120.0


class NodeProcesses:
    """A node's ``ketter`` processes on its config: run, started (each with
    its log), killed and stopped by pid."""

    config: Path

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, command: str) -> Path:
        raise NotImplementedError

    def ketter(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KETTER, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )

    def start(self, command: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.log_path(command), "ab") as log:
            proc = subprocess.Popen(
                [*KETTER, "--config", str(self.config), command],
                stdout=log,
                stderr=log,
                env=cli_env(**env),
            )
        self.procs[command] = proc
        return proc

    def kill(self, command: str) -> None:
        """kill -9 the node's ``command`` process and reap it (no zombie)."""
        proc = self.procs[command]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process cannot stop itself
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class PgNode(NodeProcesses):
    """One node under ``root`` whose job store is the database ``dsn``; its
    routes' folders are under ``shares`` (``root`` when not given)."""

    def __init__(
        self,
        root: Path,
        dsn: str,
        *,
        node: str = "pg-node",
        shares: Path | None = None,
        ttl: str = "4s",
        workers: int = 2,
        max_attempts: int = 5,
        conflict: str = "fail",
    ) -> None:
        super().__init__()
        self.root, self.dsn, self.name = root, dsn, node
        self.shares = shares if shares is not None else root
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "ketter.yaml"
        self.config.write_text(
            CONFIG.format(
                root=root,
                dsn=dsn,
                node=node,
                shares=self.shares,
                ttl=ttl,
                workers=workers,
                max_attempts=max_attempts,
                conflict=conflict,
            )
        )
        for name in FOLDERS:
            (self.shares / name).mkdir(parents=True, exist_ok=True)

    def log_path(self, command: str) -> Path:
        return self.root / f"{command}.log"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def states(self) -> dict[str, str]:
        """The newest job's state per source name."""
        rows = self.query("SELECT source_display, state FROM jobs ORDER BY id")
        return {os.path.basename(name): state for name, state in rows}

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.root.glob("*.log"))

    def wait_for(
        self,
        predicate: Callable[[], object],
        what: str,
        *,
        alive: tuple[str, ...] = ("watcher", "workers"),
    ) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            for name in alive:
                proc = self.procs[name]
                assert proc.poll() is None, f"{name} exited waiting for {what}:\n{self.logs()}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; jobs: "
                    f"{self.query('SELECT id, route, state, attempt, error FROM jobs')}\n"
                    f"{self.logs()[-6000:]}"
                )
            time.sleep(0.1)


def drop(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).write_bytes(data)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Hidden names in ``folder``: temporaries, partial files. A placement
    probe (two empty files made and removed) cut by the kill is not one:
    the orphan sweep removes those an hour old, on every backend
    (``ketter.engine.cleanup.find_orphans``). Nor is a route root's share
    marker (``.ketter-share-<route>.id``), which is there on purpose."""
    return [
        p.name
        for p in folder.iterdir()
        if p.name.startswith(".") and not p.name.startswith((".ketter-probe-", SHARE_MARKER))
    ]


def files(folder: Path) -> list[Path]:
    """The files in ``folder`` but a route root's share marker."""
    return [p for p in folder.iterdir() if not p.name.startswith(SHARE_MARKER)]
