"""The two services as systemd runs them: `ketter watcher` and `ketter
workers` as two real processes, started with the ExecStart= of the rendered
units (no ExecStartPre=: the workers migrate the new store before READY=1),
each with its own $NOTIFY_SOCKET as systemd would give it.

Files and folders dropped into a copy route and a move route are delivered
once and byte-identical, move sources disappear, `ketter health` is healthy
while both run, SIGTERM stops both with exit 0, and the audit chain
verifies afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ketter.config import load_config
from ketter.deploy.units import exec_start, render_units

PYTHON = os.path.join(sys.prefix, "bin", "python")
#: Give up when nothing moved forward for this long (not a total timeout).
NO_PROGRESS_TIMEOUT = 30.0


def _env(notify: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KETTER_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify)
        env["WATCHDOG_USEC"] = "1000000"  # WatchdogSec=1: a WATCHDOG=1 every 0.25 s
    return env


class Notifications:
    """A datagram socket that collects what a service sends to systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def seen(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for m in self.poll() for line in m.splitlines())

    def close(self) -> None:
        self.sock.close()


def _wait(predicate: Callable[[], bool], *, progress: Callable[[], object] = lambda: None,
          message: str) -> None:
    """Poll until ``predicate``; fail only after NO_PROGRESS_TIMEOUT seconds in
    which ``progress()`` did not change (a slow CI box is not a failure)."""
    last, deadline = progress(), time.monotonic() + NO_PROGRESS_TIMEOUT
    while not predicate():
        now = progress()
        if now != last:
            last, deadline = now, time.monotonic() + NO_PROGRESS_TIMEOUT
        if time.monotonic() > deadline:
            raise AssertionError(f"no progress for {NO_PROGRESS_TIMEOUT}s waiting for "
                                 f"{message} (last progress: {last})")
        time.sleep(0.1)


def _query(db: str, sql: str) -> list[tuple]:
    if not os.path.exists(db):
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@contextmanager
def _service(argv: list[str], notify: Notifications, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=_env(notify.path), stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _names(root: Path) -> list[str]:
    """The names under ``root`` while the services run: a name only, never
    its bytes, since a worker may rename a ``.part`` between the listing and
    a read (which made this progress probe itself fail on a busy CI box)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_watcher_and_workers_as_systemd_runs_them(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("ingest", "dub", "dub_out", "qc")}
    for path in dirs.values():
        path.mkdir()
    config_path = tmp_path / "ketter.yaml"
    fast = "stable_seconds: 0.5, poll_interval: 0.2s"
    config_path.write_text(f"""\
state_dir: {tmp_path / 'state'}
node: it-node
workers: 2
shutdown_timeout: 10s
lease: {{ttl: 10s, heartbeat: 0.5s, sweep_interval: 1s}}
health: {{heartbeat_stale: 30s, min_free: 1}}
routes:
  - {{name: ingest-to-dub, source: {dirs['ingest']}, destination: {dirs['dub']},
     mode: copy, folders: as_unit, mhl: false, {fast}}}
  - {{name: dub-to-qc, source: {dirs['dub_out']}, destination: {dirs['qc']},
     mode: move, {fast}}}
""")
    config = load_config(config_path)
    units = render_units(config, python=PYTHON)
    workers_unit, watcher_unit = units["ketter-workers.service"], units["ketter-watcher.service"]

    with ExitStack() as stack:
        # The workers (they migrate the store first); the watcher only once
        # they are READY (After=ketter-workers.service with Type=notify).
        assert "\nExecStartPre=" not in workers_unit
        notes = {name: Notifications(tmp_path / f"{name}.notify")
                 for name in ("workers", "watcher")}
        for note in notes.values():
            stack.callback(note.close)
        workers = stack.enter_context(_service(exec_start(workers_unit), notes["workers"],
                                               tmp_path / "workers.log"))
        _wait(lambda: notes["workers"].seen("READY=1") or workers.poll() is not None,
              message="READY=1 from the workers")
        assert workers.poll() is None, (tmp_path / "workers.log").read_text()[-3000:]
        watcher = stack.enter_context(_service(exec_start(watcher_unit), notes["watcher"],
                                               tmp_path / "watcher.log"))
        _wait(lambda: notes["watcher"].seen("READY=1") or watcher.poll() is not None,
              message="READY=1 from the watcher")
        assert watcher.poll() is None, (tmp_path / "watcher.log").read_text()[-3000:]

        # a delivery package (folder) and a loose file on the copy route...
        copies = {"REEL_01/picture.mxf": os.urandom(3 * 2**20),
                  "REEL_01/audio/en.wav": os.urandom(300_000),
                  "REEL_01/audio/fr.wav": os.urandom(200_000),
                  "poster.tif": os.urandom(50_000)}
        # ...and files in nested folders on the move route
        moves = {"mix_fr.wav": os.urandom(1_000_000), "ep01/stems/dx.wav": os.urandom(400_000),
                 "ep01/stems/mx.wav": os.urandom(10), "ep02/m&e.wav": b""}
        for root, files in ((dirs["ingest"], copies), (dirs["dub_out"], moves)):
            for rel, data in files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
        expected_jobs = 2 + len(moves)  # REEL_01 as one unit, poster.tif, 4 moved files

        db = config.db_path

        def progress() -> object:
            return (_query(db, "SELECT state, COUNT(*), SUM(bytes_done) FROM jobs "
                               "GROUP BY state ORDER BY state"),
                    _names(dirs["dub"]), _names(dirs["qc"]))

        def done() -> bool:
            for proc, name in ((workers, "workers"), (watcher, "watcher")):
                assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            rows = _query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state")
            return rows == [("completed", expected_jobs)]

        _wait(done, progress=progress, message=f"{expected_jobs} completed jobs")

        health = subprocess.run([PYTHON, "-I", "-m", "ketter", "--config", str(config_path),
                                 "health", "--json"], env=_env(), capture_output=True,
                                text=True, timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr
        assert notes["workers"].seen("WATCHDOG=1") and notes["watcher"].seen("WATCHDOG=1")

        # systemctl stop ketter.target: the watcher first (it is ordered after)
        for proc, name in ((watcher, "watcher"), (workers, "workers")):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=config.shutdown_timeout + 15)
            assert proc.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert notes[name].seen("STOPPING=1")

    # delivered once, byte-identical, nothing else (no temporaries, no "name (1)")
    assert _tree(dirs["dub"]) == copies
    assert _tree(dirs["qc"]) == moves
    assert _tree(dirs["ingest"]) == copies  # copy sources stay
    assert _tree(dirs["dub_out"]) == {}  # move sources gone...
    assert dirs["dub_out"].is_dir()  # ...but never the route root
    assert _query(config.db_path, "SELECT COUNT(*) FROM jobs WHERE state != 'completed'") \
        == [(0,)]

    verify = subprocess.run([PYTHON, "-I", "-m", "ketter", "--config", str(config_path),
                             "audit", "verify"], env=_env(), capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK" in verify.stdout
