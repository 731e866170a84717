"""A batch's placements trust one read of their claims for a while
(ketter.jobs.fence), but not a claim the lease keeper has found lost in the
meantime. In process, on a real SQLite store and real files: the first
placement is wrapped (the real one runs) so that, right after it, another
worker's claim replaces the second job's and the keeper's real renewal pass
finds it lost; the second placement must then check its claim again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ketter.store.models import Job
from tests.integration.jobs.inprocess import after_each_placement, in_process_route


def test_a_claim_the_keeper_found_lost_is_checked_before_its_placement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with in_process_route(tmp_path) as route:
        store = route.store
        first, second = route.submit("a.wav", "b.wav")
        keeper = route.keeper()
        taken: list[str] = []

        def take_over_the_second() -> None:
            if taken:
                return
            # Another worker's claim on the second job (its lease treated as
            # run out), inside the first read's trust; the keeper's renewal
            # of it is refused and marks it lost.
            other = store.claim_next(
                {"r": 0}, hint=second, owner="other/1/w", now=time.time() + 3600, ttl=30.0
            )
            assert other is not None
            taken.append(other.claim)
            keeper.renew_all(now=time.time(), mono=time.monotonic())

        after_each_placement(monkeypatch, take_over_the_second)
        route.runner(keeper).handle(first)
        assert taken, "no batch placement ran"
        assert Job.get_by_id(first).state == "completed"
        assert (tmp_path / "out" / "a.wav").exists()
        # The second job is the other worker's: this one placed nothing.
        assert Job.get_by_id(second).claim == taken[0]
        assert not (tmp_path / "out" / "b.wav").exists()
