"""A worker's batch of small files (ketter.jobs.batch) in process, on a real
SQLite store and real files: how many files a batch takes while other
threads are idle, and a job that leaves a batch leaving the lease keeper."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import Config, load_config
from ketter.errors import TransientError
from ketter.jobs import batch as batch_mod
from ketter.jobs.lease import LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.runtime.signals import Shutdown
from ketter.store import open_store
from ketter.store.models import Job
from ketter.store.sqlite import SqliteJobStore


@dataclass
class Route:
    root: Path
    config: Config
    store: SqliteJobStore

    def drop(self, count: int) -> list[int]:
        """``count`` small files submitted on the route: their job ids."""
        ids = []
        for i in range(count):
            src = self.root / "in" / f"take_{i:02}.wav"
            src.write_bytes(os.urandom(10_000 + i))
            route = self.config.route("r")
            (result,) = submit_path(self.store, self.config, route, os.fsencode(src), now=1e9)
            ids.append(result.job_id)
        return ids

    def runner(self, keeper: LeaseKeeper, threads: int = 1) -> JobRunner:
        return JobRunner(
            self.config, store=self.store, shutdown=Shutdown(), keeper=keeper, threads=threads
        )

    def keeper(self) -> LeaseKeeper:
        return LeaseKeeper(self.config, Shutdown(), store=self.store)


@pytest.fixture
def route(tmp_path: Path) -> Iterator[Route]:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    cfg = tmp_path / "ketter.yaml"
    cfg.write_text(
        f"""
state_dir: {tmp_path}/state
node: batch-node
routes:
  - {{name: r, source: in, destination: out}}
""",
        encoding="utf-8",
    )
    config = load_config(str(cfg))
    db = open_store(config.db_path)
    try:
        yield Route(tmp_path, config, SqliteJobStore(db, AuditChain(node="batch-node")))
    finally:
        db.close()


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


def test_a_job_that_left_the_batch_gets_no_lease_back_from_the_keeper(
    route: Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first job's copy fails with a transient error (it waits for its
    retry, its lease cleared) and the keeper's real renewal pass runs while
    the batch places the second: the waiting job must not get a lease back,
    which would keep it from its retry until that lease ran out."""
    first, second = route.drop(2)
    keeper = route.keeper()
    real_copy, real_place = batch_mod.Batch._copy, batch_mod.Batch._place
    renewed: list[int] = []

    def copy_failing_the_first(self: batch_mod.Batch, m: batch_mod._Member) -> None:
        if m.job.id == first:
            raise TransientError("the share answered EIO (a test's failure)")
        real_copy(self, m)

    def place_then_renew(
        self: batch_mod.Batch, m: batch_mod._Member, dirs: object, fence: object
    ) -> None:
        real_place(self, m, dirs, fence)  # type: ignore[arg-type]
        # The keeper's tick while the batch goes on with the second job.
        keeper.renew_all(now=time.time(), mono=time.monotonic())
        renewed.extend(a.job_id for a in keeper.running())

    monkeypatch.setattr(batch_mod.Batch, "_copy", copy_failing_the_first)
    monkeypatch.setattr(batch_mod.Batch, "_place", place_then_renew)
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
