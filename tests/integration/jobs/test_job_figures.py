"""The figures a job reports about itself (issue #14 finding 19):
job_history's ``seconds``/``mb_per_s`` measure the copy that succeeded, not
the waits around it; a graceful stop's ``release`` event records the bytes
of the partial it kept; each completed job is one JSON line in the service
log."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import parse_config
from ketter.jobs.lease import ActiveJob, LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.runtime.signals import Shutdown
from ketter.store import open_store
from ketter.store.models import Event, Job, database
from ketter.store.sqlite import SqliteJobStore

MiB = 2**20


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node(tmp_path: Path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    config = parse_config(
        f"""
state_dir: {tmp_path}/state
resume_min_bytes: 1MiB
routes:
  - {{name: r, source: in, destination: out}}
""",
        base_dir=str(tmp_path),
    )
    db = open_store(config.db_path)
    store = SqliteJobStore(db, AuditChain(node=config.node))
    clock = Clock()

    def runner(stop_after: int | None = None) -> JobRunner:
        """A runner whose process is asked to stop once ``stop_after`` bytes
        were copied (a SIGTERM in the middle of the copy)."""
        shutdown = Shutdown()

        def on_progress(active: ActiveJob) -> None:
            if stop_after is not None and active.bytes_done >= stop_after:
                shutdown.request()

        return JobRunner(
            config,
            store=store,
            shutdown=shutdown,
            keeper=LeaseKeeper(config, shutdown, store=store),
            clock=clock,
            on_progress=on_progress,
        )

    def submit(name: str, size: int) -> int:
        path = tmp_path / "in" / name
        path.write_bytes(os.urandom(size))
        (result,) = submit_path(store, config, config.route("r"), os.fsencode(path), now=clock.now)
        return result.job_id

    yield tmp_path, clock, runner, submit
    db.close()


def _history(job_id: int) -> dict:
    cursor = database.obj.execute_sql("SELECT * FROM job_history WHERE job_id = ?", (job_id,))
    names = [c[0] for c in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def test_seconds_and_release_bytes_leave_out_the_wait(node) -> None:
    root, clock, runner, submit = node
    job_id = submit("take.mov", 24 * MiB)
    # A stop (SIGTERM) once 4 MiB are copied: the job is released and its
    # checkpointed partial kept for the next claim.
    assert runner(stop_after=4 * MiB).handle(job_id) == job_id
    job = Job.get_by_id(job_id)
    assert job.state == "transferring" and job.lease_owner is None
    partials = [p for p in (root / "out").iterdir() if p.name.endswith(".part")]
    assert len(partials) == 1
    kept = partials[0].stat().st_size
    assert kept >= 1 * MiB
    release = Event.select().where((Event.job_id == job_id) & (Event.event == "release")).get()
    assert json.loads(release.details)["bytes_done"] == kept
    assert job.bytes_done == kept
    # The node stays down for 50 s; the next start resumes and finishes.
    clock.now += 50.0
    assert runner().handle(job_id) == job_id
    assert Job.get_by_id(job_id).state == "completed"
    row = _history(job_id)
    assert row["seconds"] is not None and row["seconds"] < 30, row
    assert row["mb_per_s"] is not None and row["mb_per_s"] > 0
    verify = Event.select().where((Event.job_id == job_id) & (Event.event == "verify")).get()
    details = json.loads(verify.details)
    assert row["seconds"] == details["seconds"]
    assert row["mb_per_s"] == round(details["bytes"] / details["seconds"] / 1e6, 1)


def test_each_completed_job_is_one_log_line(node, caplog) -> None:
    root, _clock, runner, submit = node
    job_id = submit("clip.mov", 3 * MiB)
    with caplog.at_level(logging.INFO, logger="ketter.jobs"):
        assert runner().handle(job_id) == job_id
    lines = [r for r in caplog.records if r.getMessage() == "job completed"]
    assert len(lines) == 1
    record = lines[0].__dict__
    job = Job.get_by_id(job_id)
    assert record["ketter.job_id"] == job_id
    assert record["ketter.route"] == "r"
    assert record["file.path"] == str(root / "in" / "clip.mov")
    assert record["ketter.destination"] == str(root / "out" / "clip.mov")
    assert record["ketter.bytes"] == 3 * MiB
    assert record["ketter.sha256"] == job.sha256
    assert 0 < record["ketter.seconds"] < 30


def test_a_batch_logs_each_job_it_completed_as_the_store_has_it(node, caplog) -> None:
    """A batch (ketter.jobs.batch) logs its deliveries from what its steps
    wrote, without reading the rows back: each line must say what the store
    says, and a job that left the batch is not logged."""
    root, _clock, runner, submit = node
    ids = [submit(f"take_{i}.wav", 20_000 + i) for i in range(3)]
    (root / "out" / "take_2.wav").write_bytes(b"already there")  # conflict: fail
    with caplog.at_level(logging.INFO, logger="ketter.jobs"):
        assert runner().handle(ids[0]) == ids[0]
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "job completed"]
    assert sorted(line["ketter.job_id"] for line in lines) == ids[:2]
    for line in lines:
        job = Job.get_by_id(line["ketter.job_id"])
        assert job.state == "completed"
        assert line["ketter.route"] == job.route == "r"
        assert line["file.path"] == str(root / "in" / Path(job.source_display).name)
        assert line["ketter.destination"] == job.dest_display
        assert (
            line["ketter.bytes"]
            == job.size
            == (root / "out" / Path(job.dest_display).name).stat().st_size
        )
        assert line["ketter.sha256"] == job.sha256 is not None
        assert line["ketter.seconds"] == job.transfer_seconds is not None
        assert line["ketter.attempt"] == job.attempt == 1
    assert Job.get_by_id(ids[2]).state != "completed"
