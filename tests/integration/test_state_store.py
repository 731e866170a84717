"""The state disk failing under running services (issue #14, findings 8 and 9),
with real `ketter` processes, a real 4 MiB tmpfs, real `chattr +i` and a real
`rm` of the job store.

* A full state disk, an immutable store: the services used to exit 1 with a
  raw traceback (systemd gave up after five restarts). They must stay up,
  paused, with `health` failing on `state store not writable: <errno>`, and
  resume by themselves.
* The store deleted while a move runs: the workers used to go on moving and
  deleting sources into an unlinked file, and a restart created an empty
  store silently. No source may go; a restart must refuse (exit 2) until
  `ketter db upgrade --new-store` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env
from tests.integration.jobs.harness import Node

MiB = 2**20

RUN_CONFIG = """\
state_dir: state
node: test-node
workers: 2
shutdown_timeout: 10s
lease: {ttl: 4s, heartbeat: 0.5s, sweep_interval: 0.5s, stall_timeout: 60s}
retry: {max_attempts: 3, base_delay: 0.2s, max_delay: 1s}
# health's free-space check looks at the host disk under the test's folder:
# the test asserts health fine again, whatever the machine has free.
health: {min_free: 1}
routes:
  - {name: move, source: in/move, destination: out/move, mode: move,
     stable_seconds: 0.3, poll_interval: 0.2s}
"""


def wait_until(predicate: Callable[[], object], what: str, procs: list[subprocess.Popen],
               log: Callable[[], str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            assert proc.poll() is None, (
                f"{proc.args[-1]} exited ({proc.returncode}) while waiting for {what}:\n{log()}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log()}"
        time.sleep(0.2)


def store_status(state: Path) -> list[dict]:
    """The status files the services publish for `ketter health`."""
    found = []
    for path in sorted((state / "run").glob("store-*.json")):
        with contextlib.suppress(ValueError, OSError):
            found.append(json.loads(path.read_bytes().strip()))
    return found


def heartbeat_pid(db: Path, component: str) -> int | None:
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            row = con.execute(
                "SELECT pid FROM heartbeats WHERE component = ?", (component,)
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); this test needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte."""
    filler = folder / "someone-else.bin"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (65536, 1):
            with contextlib.suppress(OSError):
                while fh.write(b"\0" * chunk):
                    pass
    return filler


@pytest.mark.root
def test_full_state_disk_pauses_ketter_run_and_it_resumes_by_itself(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with tmpfs(state, "4m"):
        (tmp_path / "ketter.yaml").write_text(RUN_CONFIG)
        for folder in ("in/move", "out/move"):
            (tmp_path / folder).mkdir(parents=True)
        env = cli_env()
        ketter = [*KETTER, "--config", str(tmp_path / "ketter.yaml")]
        assert subprocess.run([*ketter, "db", "upgrade"], env=env, cwd=tmp_path,
                              capture_output=True).returncode == 0
        log_path = tmp_path / "run.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*ketter, "run"], stdout=log, stderr=log, env=env,
                                    cwd=tmp_path)

        def logs() -> str:
            files = {p.name: p.stat().st_size for p in state.iterdir() if p.is_file()}
            usage = os.statvfs(state)
            return (f"state dir: {files}, {usage.f_bavail * usage.f_frsize} bytes free\n"
                    + log_path.read_text(errors="replace")[-3000:])

        def health() -> subprocess.CompletedProcess:
            return subprocess.run([*ketter, "health"], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)

        try:
            db = state / "ketter.db"
            wait_until(lambda: heartbeat_pid(db, "workers") == proc.pid, "the start", [proc],
                       logs)
            filler = fill(state)
            files = {f"take{i:02d}.wav": os.urandom(3000) for i in range(30)}
            for name, data in files.items():
                (tmp_path / "in" / "move" / name).write_bytes(data)
            # The new jobs cannot be recorded: every route pauses with the errno.
            wait_until(lambda: any(s.get("unwritable") for s in store_status(state)),
                       "the store to be reported not writable", [proc], logs)
            report = health()
            assert report.returncode == 1, report.stdout
            assert "state store not writable: [Errno 28] No space left on device" in \
                report.stdout, report.stdout
            assert "route move: paused: state store not writable" in report.stdout
            since = min(s["since"] for s in store_status(state) if s.get("unwritable"))
            # Up and paused for a while (it used to exit 1 at once), probing.
            wait_until(lambda: time.time() - since > 6, "a few probes", [proc], logs)
            assert "alert: node test-node: every route paused: state store not writable" \
                in log_path.read_text()
            # Nothing lost: every take is still a source or was delivered whole.
            for name, data in files.items():
                src, dst = tmp_path / "in" / "move" / name, tmp_path / "out" / "move" / name
                assert (src.exists() and src.read_bytes() == data) or dst.read_bytes() == data
            filler.unlink()  # space returns: it resumes by itself
            wait_until(lambda: all((tmp_path / "out" / "move" / n).exists() for n in files)
                       and not any((tmp_path / "in" / "move").iterdir()),
                       "every take delivered after the space returned", [proc], logs)
            wait_until(lambda: health().returncode == 0, "health to be fine again", [proc],
                       logs)
            assert "state store writable again" in log_path.read_text()
            for name, data in files.items():
                assert (tmp_path / "out" / "move" / name).read_bytes() == data
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, logs()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.root
def test_immutable_store_pauses_the_workers_at_start_and_while_running(tmp_path: Path) -> None:
    node = Node(tmp_path)
    db = node.db_path
    if not _chattr("+i", db):
        pytest.skip(f"chattr +i is not supported on the filesystem of {tmp_path} "
                    "(needs ext4/xfs/btrfs and root)")
    _chattr("-i", db)

    def logs() -> str:
        return "".join(p.read_text(errors="replace") for p in tmp_path.glob("workers-*.log"))

    try:
        workers = node.start_workers()
        node.wait_ready(workers)
        assert _chattr("+i", db)
        # SQLite would go on appending to the WAL; the workers say it at once.
        wait_until(lambda: any(s.get("unwritable") for s in store_status(db.parent)),
                   "the immutable store to be reported", [workers], logs)
        report = node.ketter("health")
        assert report.returncode == 1
        assert "state store not writable: [Errno 1] Operation not permitted" in report.stdout, \
            report.stdout
        assert node.stop(workers) == 0, logs()
        # A start on an immutable store: up and paused, not exit 1.
        workers = node.start_workers()
        wait_until(lambda: any(s.get("unwritable") and s["pid"] == workers.pid
                               for s in store_status(db.parent)),
                   "the restarted workers to report the immutable store", [workers], logs)
        time.sleep(0)  # no fixed wait: the process is polled below while it probes
        since = next(s["since"] for s in store_status(db.parent) if s["pid"] == workers.pid)
        wait_until(lambda: time.time() - since > 4, "a few probes", [workers], logs)
        assert _chattr("-i", db)
        wait_until(lambda: node.query("SELECT pid FROM heartbeats WHERE component='workers'")
                   == [(workers.pid,)], "the workers to write again", [workers], logs)
        src = tmp_path / "src" / "copy" / "after.bin"
        src.write_bytes(b"x" * 5000)
        assert node.ketter("enqueue", "--route", "copy", str(src)).returncode == 0
        node.wait_for(node.all_done, what="the job after the store came back", proc=workers)
        assert (tmp_path / "dst" / "copy" / "after.bin").read_bytes() == b"x" * 5000
        assert node.stop(workers) == 0
    finally:
        _chattr("-i", db)
        node.cleanup()


def test_store_deleted_during_a_move_keeps_every_source_and_refuses_a_new_store(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    db = node.db_path

    def logs() -> str:
        return "".join(p.read_text(errors="replace") for p in tmp_path.glob("workers-*.log"))

    try:
        # A slow copy (a pause at each checkpoint) so the rm lands mid-move.
        workers = node.start_workers(env={"KETTER_FAULT_DELAY": "copy-progress=0.3"})
        node.wait_ready(workers)
        data = os.urandom(24 * MiB)
        src = tmp_path / "src" / "move" / "reel.mov"
        src.write_bytes(data)
        assert node.ketter("enqueue", "--route", "move", str(src)).returncode == 0
        node.wait_for(lambda: "transferring" in node.states().values(),
                      what="the move to be copying", proc=workers)
        for name in ("ketter.db", "ketter.db-wal", "ketter.db-shm"):
            (db.parent / name).unlink(missing_ok=True)
        wait_until(lambda: "stopped: job 1" in logs() and "was deleted" in logs(),
                   "the copy to stop", [workers], logs)
        assert any(s.get("lost") for s in store_status(db.parent))
        wait_until(lambda: "alert: node test-node: job store" in logs()
                   and "was deleted" in logs(), "the alert", [workers], logs)
        # Still up, paused; the source is where it was, nothing delivered.
        assert workers.poll() is None
        assert src.read_bytes() == data
        assert not (tmp_path / "dst" / "move" / "reel.mov").exists()
        report = node.ketter("health")
        assert report.returncode == 1 and "was deleted" in report.stdout, report.stdout
        assert node.stop(workers) == 0, logs()
        assert src.read_bytes() == data
        # A restart does not silently start over with an empty store.
        again = node.ketter("workers")
        assert again.returncode == 2, again.stderr
        assert "has run before" in again.stderr and "--new-store" in again.stderr
        assert not db.exists()
        plain = node.ketter("db", "upgrade")
        assert plain.returncode == 2 and "--new-store" in plain.stderr
        # --new-store on purpose, once the old audit log is archived (a new
        # store starts a new chain: docs/operations.md).
        refused = node.ketter("db", "upgrade", "--new-store")
        assert refused.returncode == 2 and "archive the old log" in refused.stderr
        logs_dir = db.parent / "logs"
        logs_dir.rename(db.parent / "logs.before-new-store")
        assert node.ketter("db", "upgrade", "--new-store").returncode == 0
        workers = node.start_workers()
        node.wait_ready(workers)
        assert node.stop(workers) == 0
    finally:
        node.cleanup()
