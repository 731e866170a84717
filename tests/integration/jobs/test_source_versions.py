"""A source that changes under a job (issue #14, findings 2, 4, 14 and 15):
real files, real writer processes, the real runner and job store.

* a rewrite in place that restores size and mtime (``os.utime``) is never
  delivered torn, and its source is kept;
* a FIFO swapped into an ``as_unit`` folder fails the job instead of
  blocking a worker;
* a file replaced before its job starts ends ``superseded``, without an
  alert, and the new version is delivered;
* a move never deletes a source another process still holds open for
  writing, nor one changed after its copy (ctime included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import Config, parse_config
from ketter.engine.context import TransferContext
from ketter.engine.move import delete_source
from ketter.engine.results import Placement
from ketter.engine.source import inspect_source
from ketter.engine.spec import TransferSpec
from ketter.jobs.lease import ActiveJob, LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.runtime.signals import Shutdown
from ketter.store import open_store
from ketter.store.models import Event, Job
from ketter.store.sqlite import SqliteJobStore
from tests.integration.engine.workers_bench import Workers

BIG = 64 * 1024 * 1024

#: Rewrites a file in place with other bytes of the same size, then sets its
#: mtime back: only the ctime shows it (what a deliberate writer can do).
REWRITE = """
import os, sys
path = sys.argv[1]
st = os.stat(path)
with open(path, "r+b") as f:
    left = st.st_size
    while left:
        n = min(left, 4 << 20)
        f.write(b"\\xab" * n)
        left -= n
    f.flush()
    os.fsync(f.fileno())
os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
"""

#: Holds a file open for writing until its stdin closes (a paused writer).
HOLD = """
import sys
with open(sys.argv[1], "ab") as f:
    print("open", flush=True)
    sys.stdin.read()
"""


@dataclass
class Alerts:
    sent: list[tuple[str, str]] = field(default_factory=list)

    def notify(self, kind: str, route: str | None, message: str) -> None:
        self.sent.append((kind, message))


@dataclass
class Bench:
    root: Path
    config: Config
    alerts: Alerts
    hooks: list[Callable[[ActiveJob], None]]
    store: SqliteJobStore

    def runner(self) -> JobRunner:
        shutdown = Shutdown()
        return JobRunner(
            self.config,
            store=self.store,
            shutdown=shutdown,
            keeper=LeaseKeeper(self.config, shutdown, store=self.store),
            notifier=self.alerts,
            on_progress=lambda active: [hook(active) for hook in list(self.hooks)] and None,
        )

    def submit(self, route: str, path: Path) -> int:
        (result,) = submit_path(
            self.store,
            self.config, self.config.route(route), os.fsencode(path), now=time.time()
        )
        return result.job_id

    def run(self, job_id: int) -> Job:
        """One attempt of ``job_id`` (made due first); small files of one
        route may run together as a batch, so a job may have run already."""
        job = Job.get_by_id(job_id)
        if job.state in ("completed", "failed", "superseded"):
            return job
        Job.update(next_attempt_at=0).where(Job.id == job_id).execute()
        assert self.runner().handle(job_id) is not None
        return Job.get_by_id(job_id)

    def run_to_end(self, job_id: int, *, attempts: int = 6) -> Job:
        job = Job.get_by_id(job_id)
        for _ in range(attempts):
            job = self.run(job_id)
            if job.state in ("completed", "failed", "superseded"):
                break
        return job


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    for name in ("copy", "move", "unit"):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "out" / name).mkdir(parents=True)
    config = parse_config(
        f"""
state_dir: {tmp_path}/state
retry: {{max_attempts: 4, base_delay: 0.1s, max_delay: 0.2s}}
routes:
  - {{name: copy, source: in/copy, destination: out/copy, mode: copy}}
  - {{name: move, source: in/move, destination: out/move, mode: move}}
  - {{name: unit, source: in/unit, destination: out/unit, mode: copy, folders: as_unit}}
""",
        base_dir=str(tmp_path),
    )
    db = open_store(config.db_path)
    yield Bench(tmp_path, config, Alerts(), [], SqliteJobStore(db, AuditChain(node=config.node)))
    db.close()


def once(action: Callable[[], None]) -> Callable[[ActiveJob], None]:
    """A progress hook that runs ``action`` at the first progress report of
    the copy (bytes already read, more to come)."""
    done = []

    def hook(active: ActiveJob) -> None:
        if not done and active.bytes_done > 0:
            done.append(True)
            action()

    return hook


def test_in_place_rewrite_with_mtime_restored_is_not_delivered_torn(bench: Bench) -> None:
    """Finding 2: old head + new tail, same size and mtime, was verified and
    the source deleted. The ctime gives it away: the copy is discarded, the
    source kept; the next attempt delivers the new version whole."""
    src = bench.root / "in" / "move" / "take.mov"
    old = os.urandom(1 << 20) * (BIG >> 20)
    src.write_bytes(old)
    job_id = bench.submit("move", src)
    rewrite = [sys.executable, "-c", REWRITE, str(src)]
    bench.hooks.append(once(lambda: subprocess.run(rewrite, check=True, timeout=120)))
    job = bench.run(job_id)
    final = bench.root / "out" / "move" / "take.mov"
    assert job.state == "retry_wait", (job.state, job.error)
    assert "modified while it was being copied" in (job.error or "")
    assert not final.exists(), "a copy of two versions was delivered"
    new = src.read_bytes()
    assert new == b"\xab" * BIG  # the source is kept (a move must not delete it)
    bench.hooks.clear()
    job = bench.run_to_end(job_id)
    assert job.state == "completed", job.error
    assert final.read_bytes() == new
    assert not src.exists()


def test_fifo_swapped_into_an_as_unit_folder_fails_instead_of_blocking(bench: Bench) -> None:
    """Finding 4: the worker blocked forever in open() on the FIFO."""
    unit = bench.root / "in" / "unit" / "render"
    unit.mkdir()
    (unit / "a-big.bin").write_bytes(os.urandom(12 << 20))
    for i in range(5):
        (unit / f"z{i}.exr").write_bytes(os.urandom(4096))
    job_id = bench.submit("unit", unit)

    def swap() -> None:
        (unit / "z3.exr").unlink()
        os.mkfifo(unit / "z3.exr")

    bench.hooks.append(once(swap))
    outcome: list[Job] = []
    worker = threading.Thread(target=lambda: outcome.append(bench.run(job_id)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():
        # Unblock the hung open() so the test process can end, then fail.
        fd = os.open(unit / "z3.exr", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(60)
        pytest.fail("the worker blocked on a FIFO in the source folder")
    (job,) = outcome
    assert job.state == "failed", (job.state, job.error)
    assert "is not a regular file" in (job.error or "")
    assert "z3.exr" in (job.error or "")
    assert not (bench.root / "out" / "unit" / "render").exists()


def test_file_replaced_before_its_job_starts_is_superseded_quietly(bench: Bench) -> None:
    """Finding 14 (last item): the old version's job failed and alerted."""
    src = bench.root / "in" / "copy" / "mix.wav"
    src.write_bytes(b"first version" * 1000)
    old_job = bench.submit("copy", src)
    staged = bench.root / "in" / "copy" / ".mix.wav.part"
    staged.write_bytes(b"second version" * 1000)
    os.replace(staged, src)  # a new inode under the same name
    new_job = bench.submit("copy", src)
    assert new_job != old_job
    job = bench.run_to_end(old_job)
    assert job.state == "superseded", (job.state, job.error)
    assert bench.alerts.sent == []
    events = [e.event for e in Event.select().where(Event.job_id == old_job)]
    assert events[-1] == "supersede" and "fail" not in events
    job = bench.run_to_end(new_job)
    assert job.state == "completed", job.error
    assert (bench.root / "out" / "copy" / "mix.wav").read_bytes() == b"second version" * 1000
    assert bench.alerts.sent == []


@pytest.fixture
def holder() -> Iterator[Callable[[Path], subprocess.Popen]]:
    procs: list[subprocess.Popen] = []

    def hold(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
        return proc

    yield hold
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_move_never_deletes_a_source_still_open_for_writing(bench: Bench, holder) -> None:
    """Finding 15: the source was unlinked while its writer still had it
    open; everything written afterwards went into an unlinked inode."""
    src = bench.root / "in" / "move" / "export.wav"
    src.write_bytes(os.urandom(300_000))
    job_id = bench.submit("move", src)
    writer = holder(src)
    for _ in range(6):  # more than max_attempts: waiting uses none
        job = bench.run(job_id)
        assert job.state == "retry_wait", (job.state, job.error)
        assert "still open for writing" in (job.error or "")
        assert f"pid {writer.pid}" in (job.error or "")
        assert src.exists()
    assert (bench.root / "out" / "move" / "export.wav").read_bytes() == src.read_bytes()
    writer.stdin.close()  # type: ignore[union-attr]
    writer.wait(30)
    job = bench.run(job_id)
    assert job.state == "completed", job.error
    assert not src.exists()
    assert bench.alerts.sent == []


def test_same_fs_rename_never_moves_a_file_still_open_for_writing(
    tmp_path: Path, holder
) -> None:
    """Finding 15 with ``same_fs_move: rename`` (the workers' path): the
    source itself becomes the delivery, so one still being written is never
    renamed into place; the job waits without using attempts, then moves it."""
    w = Workers(
        os.fsencode(tmp_path),
        {"r": {"source": "in", "destination": "out", "mode": "move", "same_fs_move": "rename"}},
    )
    try:
        (tmp_path / "in").mkdir()
        (tmp_path / "out").mkdir()
        src = tmp_path / "in" / "stem.wav"
        src.write_bytes(os.urandom(100_000))
        (job_id,) = w.submit("r", os.fsencode(src))
        writer = holder(src)
        for _ in range(5):  # more than max_attempts (3): waiting uses none
            job = w.run(job_id)
            assert job.state == "retry_wait", (job.state, job.error)
            assert "still open for writing" in (job.error or "")
            assert src.exists() and not (tmp_path / "out" / "stem.wav").exists()
        writer.stdin.close()  # type: ignore[union-attr]
        writer.wait(30)
        job = w.run(job_id)
        assert job.state == "completed", job.error
        assert not src.exists() and (tmp_path / "out" / "stem.wav").exists()
        assert w.alerts.sent == []
    finally:
        w.close()


def test_move_keeps_a_source_rewritten_after_its_copy(tmp_path: Path) -> None:
    """Finding 15 (and 2): a source changed between the copy and the deletion
    (same size and mtime, only the ctime moved) is kept, not deleted; the
    watcher then sees a new version."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = tmp_path / "in" / "late.mov"
    src.write_bytes(os.urandom(1 << 20))
    spec = TransferSpec(mode="move", source_root=os.fsencode(tmp_path / "in"))
    plan = inspect_source(spec, os.fsencode(src))
    delivered = tmp_path / "out" / "late.mov"
    delivered.write_bytes(src.read_bytes())  # the verified copy, in place
    st = delivered.stat()
    placement = Placement(os.fsencode(delivered), st.st_ino, st.st_dev, False, "rename")
    subprocess.run([sys.executable, "-c", REWRITE, str(src)], check=True, timeout=120)
    assert src.stat().st_mtime_ns == plan.mtime_ns  # only the ctime tells
    result = delete_source(spec, plan, placement, TransferContext())
    assert result.kept == [os.fsencode(src)] and result.deleted == []
    assert src.read_bytes() == b"\xab" * (1 << 20)
