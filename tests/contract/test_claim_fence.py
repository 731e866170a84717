"""A batch's claim check (ketter.jobs.fence) on every job store: one read
before the placements, trusted for half the shortest lease it found, then a
check per placement again. Time is pinned: the leases' clock by ``now``,
the fence's own by a counter the test moves."""

from __future__ import annotations

import pytest

from ketter.errors import LostClaim
from ketter.jobs.fence import ClaimFence
from ketter.store.port import JobStore
from tests.contract.seed import put_job

TTL = 30.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _claimed(store: JobStore, n: int) -> dict[int, str]:
    ids = [put_job(store) for _ in range(n)]
    claims = {}
    for job_id in ids:
        got = store.claim_next({"r": 0}, hint=job_id, owner="a/1/w", now=100.0, ttl=TTL)
        assert got is not None and got.row.id == job_id
        claims[job_id] = got.claim
    return claims  # leases run out at 130


def _take_over(store: JobStore, job_id: int) -> str:
    """Another worker claims the job once its lease ran out (at 130)."""
    got = store.claim_next({"r": 0}, hint=job_id, owner="b/1/w", now=131.0, ttl=TTL)
    assert got is not None and got.recovered
    return got.claim


def test_one_read_vouches_for_half_the_lease_left_then_each_placement_checks(
    job_store: JobStore,
) -> None:
    claims = _claimed(job_store, 3)
    first, second, third = claims
    clock = Clock()
    fence = ClaimFence(job_store, claims, clock=clock, now=lambda: 110.0)  # 20 s left
    fence.ensure(first)
    # Within 10 s of the read, no further read: a change now (which a real
    # claim cannot make before the lease runs out) is not seen.
    new = _take_over(job_store, second)
    clock.t += 9.9
    fence.ensure(second)
    # Past half of what was left, each placement reads its claim again.
    clock.t += 0.2
    with pytest.raises(LostClaim, match=f"taken over by {new}"):
        fence.ensure(second)
    fence.ensure(third)  # still its own


def test_a_lease_with_no_time_left_is_checked_at_each_placement(job_store: JobStore) -> None:
    claims = _claimed(job_store, 2)
    first, second = claims
    fence = ClaimFence(job_store, claims, clock=Clock(), now=lambda: 131.0)  # ran out
    fence.ensure(first)
    new = _take_over(job_store, second)  # right after the read, the clock unmoved
    with pytest.raises(LostClaim, match=f"taken over by {new}"):
        fence.ensure(second)


def test_a_claim_taken_over_before_the_read_stops_that_job_only(job_store: JobStore) -> None:
    claims = _claimed(job_store, 2)
    first, second = claims
    new = _take_over(job_store, first)
    fence = ClaimFence(job_store, claims, clock=Clock(), now=lambda: 110.0)
    with pytest.raises(LostClaim, match=f"claim {claims[first]} was taken over by {new}"):
        fence.ensure(first)
    fence.ensure(second)
