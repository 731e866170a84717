"""The job pipeline in-process, with an injected clock (no sleeps): claims,
leases, the sweep, route pauses, retries and the error policy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import parse_config
from ketter.jobs.claim import claim_job
from ketter.jobs.lease import ActiveJob, LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.jobs.sweep import sweep
from ketter.runtime.signals import Shutdown
from ketter.store import open_store
from ketter.store.models import Event, Job, RouteStatus, database
from ketter.store.sqlite import SqliteJobStore
from tests.ctime import wait_past_ctime


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, str]] = []

    def notify(self, kind: str, route: str | None, message: str) -> None:
        self.sent.append((kind, route, message))


@pytest.fixture
def env(tmp_path: Path):
    for name in ("a_in", "a_out", "b_in", "b_out", "m_in", "m_out"):
        (tmp_path / name).mkdir()
    text = f"""
state_dir: {tmp_path}/state
retry: {{max_attempts: 3, base_delay: 10s, max_delay: 60s, jitter: false}}
lease: {{ttl: 30s, heartbeat: 5s, stall_timeout: 60s}}
routes:
  - {{name: a, source: a_in, destination: a_out, priority: 0, max_parallel: 1}}
  - {{name: b, source: b_in, destination: b_out, priority: 5}}
  - {{name: m, source: m_in, destination: m_out, destination_mount: {tmp_path}/m_out}}
"""
    config = parse_config(text, base_dir=str(tmp_path))
    db = open_store(config.db_path)
    store = SqliteJobStore(db, AuditChain(node=config.node))
    clock = Clock(time.time())
    shutdown = Shutdown()
    keeper = LeaseKeeper(config, shutdown, store=store)
    rung: list[tuple[int, float]] = []
    alerts = Alerts()
    runner = JobRunner(config, store=store, shutdown=shutdown, keeper=keeper, clock=clock,
                       ring=lambda job_id, delay: rung.append((job_id, delay)), notifier=alerts)

    class Env:
        pass

    e = Env()
    e.root, e.config, e.clock, e.runner, e.keeper, e.rung, e.alerts = (
        tmp_path, config, clock, runner, keeper, rung, alerts)
    e.store = store

    def add(route: str, name: str, data: bytes = b"x" * 1000) -> int:
        path = tmp_path / f"{route}_in" / name
        path.write_bytes(data)
        (result,) = submit_path(store, config, config.route(route), os.fsencode(path),
                                now=clock.now)
        return result.job_id

    e.add = add
    yield e
    db.close()


def events(job_id: int) -> list[str]:
    return [e.event for e in Event.select().where(Event.job_id == job_id).order_by(Event.id)]


def test_claim_takes_the_hint_else_the_best_due_job(env) -> None:
    low = env.add("a", "low.mov")
    high = env.add("b", "high.mov")
    claimed = claim_job(env.store, env.config, hint=low, owner="t", now=env.clock.now)
    assert claimed.job_id == low  # the hinted job is claimable: taken first
    other = claim_job(env.store, env.config, hint=None, owner="t", now=env.clock.now)
    assert other.job_id == high
    assert claim_job(env.store, env.config, hint=None, owner="t", now=env.clock.now) is None


def test_priority_and_max_parallel(env) -> None:
    first = env.add("a", "1.mov")
    second = env.add("a", "2.mov")
    high = env.add("b", "h.mov")
    assert claim_job(env.store, env.config, hint=None, owner="t", now=env.clock.now).job_id == high
    assert claim_job(env.store, env.config, hint=None, owner="t", now=env.clock.now).job_id == first
    # Route a allows one job at a time: the second waits while the first's lease lives.
    assert claim_job(env.store, env.config, hint=second, owner="t", now=env.clock.now) is None
    env.clock.now += 31  # both workers died: their leases expired
    again = claim_job(env.store, env.config, hint=None, owner="t", now=env.clock.now)
    assert again.job_id == high and again.recovered and again.attempt == 2
    again = claim_job(env.store, env.config, hint=None, owner="t", now=env.clock.now)
    assert again.job_id == first and again.recovered


def test_duplicate_message_is_a_no_op(env) -> None:
    job_id = env.add("b", "clip.mov")
    assert env.runner.handle(job_id) == job_id
    assert Job.get_by_id(job_id).state == "completed"
    before = Event.select().count()
    assert env.runner.handle(job_id) is None
    assert Event.select().count() == before
    assert (env.root / "b_out" / "clip.mov").read_bytes() == b"x" * 1000


def test_transient_error_backs_off_then_fails_after_max_attempts(env) -> None:
    job_id = env.add("b", "gone.mov")
    (env.root / "b_in" / "gone.mov").unlink()  # source vanished: transient
    env.runner.handle(job_id)
    job = Job.get_by_id(job_id)
    assert (job.state, job.attempt) == ("retry_wait", 1)
    assert job.next_attempt_at == pytest.approx(env.clock.now + 10)  # base_delay, no jitter
    assert "gone.mov" in job.error
    assert env.rung[-1] == (job_id, 10.0)
    assert env.runner.handle(job_id) is None  # not due yet
    env.clock.now += 10
    env.runner.handle(job_id)
    assert Job.get_by_id(job_id).next_attempt_at == pytest.approx(env.clock.now + 20)
    env.clock.now += 20
    env.runner.handle(job_id)
    job = Job.get_by_id(job_id)
    assert (job.state, job.attempt) == ("failed", 3)
    assert "gave up after 3 attempts" in job.error
    trail = events(job_id)
    assert trail.count("retry") >= 2 and trail[-2:] == ["rollback", "fail"]
    assert env.alerts.sent[-1][0] == "job_failed"


def test_permanent_error_rolls_back_and_fails_at_once(env) -> None:
    job_id = env.add("b", "clash.mov")
    (env.root / "b_out" / "clash.mov").write_bytes(b"someone else's")
    env.runner.handle(job_id)
    job = Job.get_by_id(job_id)
    assert (job.state, job.attempt) == ("failed", 1)
    assert "already exists" in job.error and "conflict policy is 'fail'" in job.error
    assert (env.root / "b_out" / "clash.mov").read_bytes() == b"someone else's"
    assert events(job_id)[-2:] == ["rollback", "fail"]


def test_unmounted_destination_pauses_route_without_using_attempts(env) -> None:
    # m_out is configured as destination_mount but is a plain folder: not mounted.
    first = env.add("m", "1.mov")
    second = env.add("m", "2.mov")
    env.runner.handle(first)
    job = Job.get_by_id(first)
    assert (job.state, job.attempt) == ("retry_wait", 0)
    assert RouteStatus.get_by_id("m").paused == 1
    assert claim_job(env.store, env.config, hint=second, owner="t", now=env.clock.now) is None
    assert [a[0] for a in env.alerts.sent] == ["route_paused"]
    paused_events = Event.select().where(Event.event == "route_paused").count()
    assert paused_events == 1
    assert list((env.root / "m_out").iterdir()) == []  # nothing written


def test_a_job_claimed_in_retry_wait_while_its_route_is_down_waits_again(env) -> None:
    # The sweep resumed the route (its look was clear a moment before), the
    # share went away again, and the job waiting in retry_wait is claimed:
    # it stopped before its first step, in retry_wait. It used to raise
    # "retry_wait -> retry_wait is not an allowed transition" out of the
    # handler, and the job's lease ran out with an attempt used (issue #15:
    # a placed move on a share whose server restarted ended failed).
    from ketter.jobs.routes import resume_route

    job_id = env.add("m", "1.mov")
    env.runner.handle(job_id)
    assert Job.get_by_id(job_id).state == "retry_wait"
    resume_route(env.store, "m", now=env.clock.now)
    Job.update(next_attempt_at=0).where(Job.id == job_id).execute()
    env.runner.handle(job_id)
    job = Job.get_by_id(job_id)
    assert (job.state, job.attempt, job.lease_owner) == ("retry_wait", 0, None)
    assert RouteStatus.get_by_id("m").paused == 1
    assert events(job_id)[-2:] == ["claim", "retry"]


def test_sweep_resumes_route_and_rings_for_due_jobs(env, tmp_path: Path) -> None:
    jobs = [env.add("b", f"{i}.mov") for i in range(5)]
    rung: list[int] = []
    report = sweep(env.store, env.config, now=env.clock.now, pending=lambda: 2, ring=rung.append)
    assert report.due == 5 and rung == jobs[2:]  # two are covered by queued messages
    # A paused route whose condition cleared resumes by itself.
    from ketter.jobs.routes import pause_route

    pause_route(env.store, "a", "share gone", now=env.clock.now)
    report = sweep(env.store, env.config, now=env.clock.now, pending=lambda: 0, ring=rung.append)
    assert report.resumed_routes == ["a"]
    assert RouteStatus.get_by_id("a").paused == 0


def test_lease_keeper_renews_only_while_bytes_move(env) -> None:
    job_id = env.add("b", "x.mov")
    claimed = claim_job(env.store, env.config, hint=job_id, owner="t", now=env.clock.now)
    active = ActiveJob(job_id, claimed.claim, "b", 1, last_progress=100.0)
    env.keeper.add(active)
    env.keeper.renew_all(now=env.clock.now + 10, mono=110.0)
    assert Job.get_by_id(job_id).lease_expires_at == pytest.approx(env.clock.now + 40)
    env.keeper.renew_all(now=env.clock.now + 70, mono=170.0)  # 70 s without progress
    assert active.stalled
    assert Job.get_by_id(job_id).lease_expires_at == pytest.approx(env.clock.now + 40)
    assert events(job_id).count("stalled") == 1
    env.keeper.renew_all(now=env.clock.now + 80, mono=180.0)
    assert events(job_id).count("stalled") == 1  # once per stall
    # Another worker takes the job over: the next renewal marks ours lost.
    Job.update(claim="someone-else").where(Job.id == job_id).execute()
    active.last_progress = 179.0
    env.keeper.renew_all(now=env.clock.now + 81, mono=181.0)
    assert active.lost


def test_requeue_refuses_when_a_newer_job_has_the_same_version(env) -> None:
    from ketter.jobs.requeue import requeue_job

    job_id = env.add("b", "clash.mov")
    (env.root / "b_out" / "clash.mov").write_bytes(b"in the way")
    env.runner.handle(job_id)
    assert Job.get_by_id(job_id).state == "failed"
    (env.root / "b_out" / "clash.mov").unlink()
    # The same version is submitted again while the failed job waits.
    newer = env.add("b", "clash.mov", data=b"x" * 1000)
    Job.update(source_key=Job.get_by_id(job_id).source_key).where(Job.id == newer).execute()
    message = requeue_job(env.store, job_id, now=env.clock.now, who="ops")
    assert f"job {newer} is already working on the same version" in message
    assert Job.get_by_id(job_id).state == "failed"


def test_the_temporary_inode_is_on_disk_before_the_rename(env, monkeypatch) -> None:
    """A power cut that keeps the rename must not lose the ``verifying``
    record (the temporary's inode): the WAL is fsynced after that commit and
    before the placement, and again before ``completed`` is reported."""
    from ketter.jobs import finishing
    from ketter.store import db as store_db

    order: list[str] = []
    real_fsync, real_place = os.fsync, finishing.place
    wal = os.path.realpath(database.obj.database + "-wal")

    def spying_fsync(fd: int) -> None:
        if os.path.realpath(f"/proc/self/fd/{fd}") == wal:
            state = database.obj.execute_sql("SELECT state FROM jobs").fetchone()[0]
            order.append(f"wal fsync ({state})")
        real_fsync(fd)

    def spying_place(*args, **kwargs):
        order.append("rename")
        return real_place(*args, **kwargs)

    monkeypatch.setattr(store_db.os, "fsync", spying_fsync)
    monkeypatch.setattr(finishing, "place", spying_place)
    job_id = env.add("b", "take.mov")
    env.runner.handle(job_id)
    assert Job.get_by_id(job_id).state == "completed"
    assert order == ["wal fsync (verifying)", "rename", "wal fsync (completed)"]


def test_a_batch_of_small_files_shares_its_flushes(env) -> None:
    """One message, five fresh small files of route b: one worker thread
    walks them side by side; the job store is flushed twice (after the
    ``verifying`` commits, after the ``completed`` ones) and the destination
    folder once, instead of 2 and 1 per file."""
    from ketter.runtime.flush import group_for

    ids = [env.add("b", f"take_{i}.wav", os.urandom(5000 + i)) for i in range(5)]
    wal = database.obj.wal_flush
    folder = group_for(os.fsencode(env.root / "b_out"))
    wal_before, folder_before = wal.flushes, folder.flushes
    assert env.runner.handle(ids[0]) == ids[0]
    assert {Job.get_by_id(i).state for i in ids} == {"completed"}
    for i in ids:
        name = f"take_{i - ids[0]}.wav"
        assert (env.root / "b_out" / name).read_bytes() == (env.root / "b_in" / name).read_bytes()
        assert events(i) == ["detect", "claim", "prepare", "copy", "verify", "place", "complete"]
    assert wal.flushes - wal_before == 2
    assert folder.flushes - folder_before == 1
    assert env.keeper.running() == []


def test_a_batch_shares_its_transactions(env, monkeypatch) -> None:
    """The jobs' steps are committed together: a batch of six opens as many
    write transactions as a batch of two (claims, then one per step)."""
    from ketter.store.db import StoreDatabase

    begins: list[int] = []
    real_begin = StoreDatabase.begin

    def counting_begin(self, lock_type=None) -> None:
        begins.append(1)
        real_begin(self, lock_type)

    monkeypatch.setattr(StoreDatabase, "begin", counting_begin)
    counts = []
    for size in (2, 6):
        ids = [env.add("b", f"n{size}_{i}.wav", os.urandom(3000 + i)) for i in range(size)]
        del begins[:]
        env.runner.handle(ids[0])
        assert {Job.get_by_id(i).state for i in ids} == {"completed"}
        steps = ["detect", "claim", "prepare", "copy", "verify", "place", "complete"]
        assert all(events(i) == steps for i in ids)
        counts.append(len(begins))
    assert counts[0] == counts[1] <= 6


def test_a_job_whose_claim_is_lost_leaves_the_batch_alone(env, monkeypatch) -> None:
    """Another worker takes one job over while the batch copies: that job's
    step is refused in the shared commit (its savepoint), it keeps the new
    owner's state, and the other jobs commit and complete."""
    from ketter.jobs.lease import JobContext

    ids = [env.add("b", f"take_{i}.wav", os.urandom(4000 + i)) for i in range(4)]
    stolen = ids[2]
    real_fault = JobContext.fault

    def take_over(self, point: str) -> None:
        if point == "mid-copy" and self.active.job_id == stolen:
            database.obj.execute_sql(
                "UPDATE jobs SET claim = 'other-worker' WHERE id = ?", (stolen,)
            )
        real_fault(self, point)

    monkeypatch.setattr(JobContext, "fault", take_over)
    env.runner.handle(ids[0])
    for i in ids:
        job = Job.get_by_id(i)
        if i == stolen:
            assert (job.state, job.claim) == ("transferring", "other-worker")
            assert events(i)[-1] == "copy"
        else:
            assert job.state == "completed"
    out = env.root / "b_out"
    assert sorted(p.name for p in out.iterdir()) == ["take_0.wav", "take_1.wav", "take_3.wav"]


def test_a_batch_respects_max_parallel(env) -> None:
    """Route a runs one job at a time: no batch mates are claimed."""
    ids = [env.add("a", f"take_{i}.wav") for i in range(3)]
    env.runner.handle(ids[0])
    assert [Job.get_by_id(i).state for i in ids] == ["completed", "detected", "detected"]


def test_a_route_paused_for_room_resumes_once_that_job_is_gone(env) -> None:
    # Review of #14 finding 17: the pause kept the room the job that did not
    # fit needed; deleted, superseded or re-queued, nothing lowered it and
    # the route stayed paused for ever. The sweep asks the waiting jobs.
    from ketter.jobs.routes import pause_route

    big = env.add("b", "big.mov", b"x" * 3000)
    huge = 1 << 62  # more than any disk has free
    Job.update(size=huge).where(Job.id == big).execute()
    pause_route(env.store, "b", "does not fit", now=env.clock.now, room_needed=huge)
    report = sweep(env.store, env.config, now=env.clock.now, pending=lambda: 0, ring=lambda _: None)
    assert report.resumed_routes == []  # still waiting for room it cannot have
    small = env.add("b", "small.mov")
    report = sweep(env.store, env.config, now=env.clock.now, pending=lambda: 0, ring=lambda _: None)
    assert report.resumed_routes == ["b"]  # the small one fits: it may run
    pause_route(env.store, "b", "does not fit", now=env.clock.now, room_needed=huge)
    Job.delete().where(Job.id.in_([big, small])).execute()  # gone (e.g. deleted)
    report = sweep(env.store, env.config, now=env.clock.now, pending=lambda: 0, ring=lambda _: None)
    assert report.resumed_routes == ["b"]
    assert RouteStatus.get_by_id("b").paused == 0


def test_enqueue_sends_a_version_rewritten_in_place_not_a_metadata_change(env) -> None:
    """`ketter enqueue` agrees with the watcher (#14 finding 2): a delivered
    file rewritten in place with size and mtime restored is a new version;
    a chmod (ctime moved, same bytes) is not."""
    job_id = env.add("b", "take.wav", b"a" * 4096)
    assert env.runner.handle(job_id) == job_id
    path = env.root / "b_in" / "take.wav"
    route = env.config.route("b")

    wait_past_ctime(path)
    os.chmod(path, 0o600)  # ctime moves, bytes do not
    (again,) = submit_path(env.store, env.config, route, os.fsencode(path), now=env.clock.now)
    assert not again.created and "was delivered" in again.message

    st = path.stat()
    wait_past_ctime(path)
    with open(path, "r+b") as fh:
        fh.write(b"b" * 4096)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    (new,) = submit_path(env.store, env.config, route, os.fsencode(path), now=env.clock.now)
    assert new.created and new.job_id != job_id
    assert Job.get_by_id(new.job_id).state == "detected"


def test_a_rollback_that_keeps_failing_ends_failed_with_an_alert(env) -> None:
    """A file where the job's destination folder should be: the undo fails
    with ENOTDIR every time. It must use up attempts and end `failed` with
    the job_failed alert, not loop in rolling_back for ever (final review)."""
    (env.root / "b_in" / "sub").mkdir()
    job_id = env.add("b", "sub/x.mov")
    (env.root / "b_out" / "sub").write_bytes(b"not a folder")
    for _ in range(12):
        env.runner.handle(job_id)
        if Job.get_by_id(job_id).state == "failed":
            break
        env.clock.now += 3600
    job = Job.get_by_id(job_id)
    assert job.state == "failed", (job.state, job.attempt, job.error)
    assert any(kind == "job_failed" for kind, _route, _msg in env.alerts.sent)
    assert (env.root / "b_out" / "sub").read_bytes() == b"not a folder"
