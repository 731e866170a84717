"""A worker's batch of small files (ketter.jobs.batch) in process, on a real
SQLite store and real files: how many files a batch takes while other
threads are idle, and a job that leaves a batch leaving the lease keeper
(and only its own entry there)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.errors import TransientError
from ketter.jobs import batch as batch_mod
from ketter.jobs.claim import Claimed
from ketter.store.models import Job
from tests.integration.jobs.inprocess import Route, after_each_placement, in_process_route


@pytest.fixture
def route(tmp_path: Path) -> Iterator[Route]:
    with in_process_route(tmp_path) as r:
        yield r


@pytest.mark.parametrize(("threads", "batch"), [(1, 40), (2, 32), (4, 16)])
def test_a_batch_leaves_a_burst_to_the_idle_threads(route: Route, threads: int, batch: int) -> None:
    """40 files waiting, one thread running a job, ``threads - 1`` idle: the
    batch takes 64 // threads files (at least 16), the rest stays waiting
    for the idle threads' doorbells."""
    ids = route.drop(40)
    route.runner(route.keeper(), threads=threads).handle(ids[0])
    states = [Job.get_by_id(i).state for i in ids]
    assert states == ["completed"] * batch + ["detected"] * (40 - batch)
    delivered = sorted(p.name for p in (route.root / "out").iterdir())
    assert delivered == [f"take_{i:02}.wav" for i in range(batch)]


def _fail_the_copy_of(job_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's copy of ``job_id`` fails with a transient error (the job
    leaves the batch to wait for its retry); the others' copies are real."""
    real_copy = batch_mod.Batch._copy

    def copy(self: batch_mod.Batch, m: batch_mod._Member) -> None:
        if m.job.id == job_id:
            raise TransientError("the share answered EIO (a test's failure)")
        real_copy(self, m)

    monkeypatch.setattr(batch_mod.Batch, "_copy", copy)


def test_a_job_that_left_the_batch_gets_no_lease_back_from_the_keeper(
    route: Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first job's copy fails with a transient error (it waits for its
    retry, its lease cleared) and the keeper's real renewal pass runs while
    the batch places the second: the waiting job must not get a lease back,
    which would keep it from its retry until that lease ran out."""
    first, second = route.drop(2)
    keeper = route.keeper()
    renewed: list[int] = []

    def renew() -> None:
        # The keeper's tick while the batch goes on with the second job.
        keeper.renew_all(now=time.time(), mono=time.monotonic())
        renewed.extend(a.job_id for a in keeper.running())

    _fail_the_copy_of(first, monkeypatch)
    after_each_placement(monkeypatch, renew)
    route.runner(keeper).handle(first)
    assert renewed == [second], "the keeper still held a job that left the batch"
    waiting = Job.get_by_id(first)
    assert waiting.state == "retry_wait"
    assert waiting.lease_expires_at is None and waiting.lease_owner is None
    # Claimable as soon as its retry is due, not a lease length later.
    again = route.store.claim_next(
        {"r": 0}, hint=first, owner="w/1/t", now=waiting.next_attempt_at + 0.1, ttl=30.0
    )
    assert again is not None and again.row.id == first
    assert Job.get_by_id(second).state == "completed"
    src, out = route.root / "in" / "take_01.wav", route.root / "out" / "take_01.wav"
    assert out.read_bytes() == src.read_bytes()


def test_a_job_claimed_again_while_its_old_batch_goes_on_keeps_its_lease_renewed(
    route: Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first job leaves the batch for its retry and another thread of
    the process claims it again while the batch places the second: the
    batch's end must not take the new claim out of the lease keeper (its
    lease would no longer be renewed, its stall never seen)."""
    first, second = route.drop(2)
    keeper = route.keeper()
    runner = route.runner(keeper, threads=4)
    again: list[object] = []

    def another_thread_claims_the_first() -> None:
        waiting = Job.get_by_id(first)
        taken = route.store.claim_next(
            {"r": 0},
            hint=first,
            owner="batch-node/1/t2",
            now=waiting.next_attempt_at + 0.1,
            ttl=30.0,
        )
        assert taken is not None
        active, _ = runner.start(taken.row, Claimed.of(taken))
        again.append(active)

    _fail_the_copy_of(first, monkeypatch)
    after_each_placement(monkeypatch, another_thread_claims_the_first)
    runner.handle(first)
    assert again, "the second job was not placed"
    assert keeper.running() == again
    assert Job.get_by_id(second).state == "completed"
