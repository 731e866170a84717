"""A batch's claim check (ketter.jobs.fence) on every job store: one read
before the placements, trusted for half the shortest lease it found left
(and half the current ``lease.ttl``, at most ``max_trust``), then a check
per placement again. Time is pinned: the leases' clock and the wall clock
by ``now``, the fence's boot clock by a value the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from ketter.errors import LostClaim
from ketter.jobs.fence import MAX_TRUST, ClaimFence
from ketter.store.port import JobStore
from tests.contract.seed import put_job


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _claimed(store: JobStore, *ttls: float) -> dict[int, str]:
    """Jobs claimed at 100 with leases of ``ttls``."""
    claims = {}
    for ttl in ttls:
        job_id = put_job(store)
        got = store.claim_next({"r": 0}, hint=job_id, owner="a/1/w", now=100.0, ttl=ttl)
        assert got is not None and got.row.id == job_id
        claims[job_id] = got.claim
    return claims


def _take_over(store: JobStore, job_id: int) -> str:
    """Another worker claims the job (its lease run out by then)."""
    got = store.claim_next({"r": 0}, hint=job_id, owner="b/1/w", now=1e6, ttl=30.0)
    assert got is not None and got.recovered
    return got.claim


def _fence(store: JobStore, claims: dict[int, str], **kw: object) -> tuple[ClaimFence, Clock]:
    boot = Clock(1000.0)
    args: dict = {"ttl": lambda: 100.0, "now": Clock(110.0), "clock": boot, "max_trust": 100.0}
    return ClaimFence(store, claims, **{**args, **kw}), boot


def test_one_read_vouches_for_half_the_shortest_lease_left(job_store: JobStore) -> None:
    claims = _claimed(job_store, 30.0, 50.0)  # 20 s and 40 s left at 110
    short, long = claims
    fence, boot = _fence(job_store, claims)
    fence.ensure(long)
    # Within 10 s of the read, no further read: a change now (which a real
    # claim cannot make before the lease runs out) is not seen.
    new = _take_over(job_store, long)
    boot.t += 9.9
    fence.ensure(long)
    # Past half of the shortest time left, each placement reads its claim.
    boot.t += 0.2
    with pytest.raises(LostClaim, match=f"taken over by {new}"):
        fence.ensure(long)
    fence.ensure(short)  # still its own


@pytest.mark.parametrize(
    "what",
    [
        "the wall clock stepped forward",
        "the wall clock stepped back",
        "lease.ttl reloaded shorter",
        "max_trust",
    ],
)
def test_the_trust_ends_sooner(job_store: JobStore, what: str) -> None:
    """A step of the wall clock (the leases' clock on SQLite), either way,
    ends it; a
    ``lease.ttl`` reloaded shorter shortens it (a renewal after the read may
    have shortened the lease to it); and it never lasts past ``max_trust``
    (by default :data:`MAX_TRUST`)."""
    claims = _claimed(job_store, 30.0)
    (job_id,) = claims
    wall, ttl = Clock(110.0), Clock(100.0)
    kw: dict = {"now": wall, "ttl": ttl}
    if what == "max_trust":
        del kw["ttl"]
        kw["max_trust"] = MAX_TRUST
    fence, boot = _fence(job_store, claims, **kw)
    fence.ensure(job_id)
    new = _take_over(job_store, job_id)
    boot.t += 1.9
    if what == "the wall clock stepped forward":
        wall.t += 20.0
    elif what == "the wall clock stepped back":
        wall.t -= 0.5
    elif what == "lease.ttl reloaded shorter":
        ttl.t = 3.6
    else:
        boot.t += 0.2  # 2.1 s: past MAX_TRUST
    with pytest.raises(LostClaim, match=f"taken over by {new}"):
        fence.ensure(job_id)


def test_a_lease_with_no_time_left_is_checked_at_each_placement(job_store: JobStore) -> None:
    claims = _claimed(job_store, 30.0, 30.0)
    first, second = claims
    fence, _ = _fence(job_store, claims, now=Clock(131.0))  # ran out at 130
    fence.ensure(first)
    new = _take_over(job_store, second)  # right after the read, no clock moved
    with pytest.raises(LostClaim, match=f"taken over by {new}"):
        fence.ensure(second)


def test_a_claim_the_keeper_found_lost_is_read_again(job_store: JobStore) -> None:
    claims = _claimed(job_store, 30.0, 30.0)
    first, second = claims
    fence, _ = _fence(job_store, claims)
    fence.ensure(first)
    new = _take_over(job_store, second)
    fence.ensure(second, lost=False)  # trusted: the read said it held
    with pytest.raises(LostClaim, match=f"taken over by {new}"):
        fence.ensure(second, lost=True)


def test_a_claim_taken_over_before_the_read_stops_that_job_only(job_store: JobStore) -> None:
    claims = _claimed(job_store, 30.0, 30.0)
    first, second = claims
    new = _take_over(job_store, first)
    fence, _ = _fence(job_store, claims)
    with pytest.raises(LostClaim, match=f"claim {claims[first]} was taken over by {new}"):
        fence.ensure(first)
    fence.ensure(second)


class _SlowRead:
    """The job store whose ``leases_held`` takes 5 s of the fence's boot
    clock (the rest is the store itself)."""

    def __init__(self, store: JobStore, boot: Clock) -> None:
        self._store, self._boot = store, boot

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def leases_held(self, claims: dict[int, str], *, now: float) -> dict[int, float]:
        held = self._store.leases_held(claims, now=now)
        self._boot.t += 5.0
        return held


def test_the_trust_is_timed_from_before_the_read(job_store: JobStore) -> None:
    """The leases' time left was read on the server some time after the
    read was sent: the trust counts from the sending."""
    claims = _claimed(job_store, 30.0)  # 20 s left at 110: trusted for 10 s
    (job_id,) = claims
    boot = Clock(1000.0)
    slow: Any = _SlowRead(job_store, boot)
    fence = ClaimFence(
        slow, claims, ttl=lambda: 100.0, now=Clock(110.0), clock=boot, max_trust=100.0
    )
    fence.ensure(job_id)  # the read: sent at 1000, answered at 1005
    new = _take_over(job_store, job_id)
    boot.t = 1009.9
    fence.ensure(job_id)
    boot.t = 1010.1  # 10 s after the sending (5 s after the answer)
    with pytest.raises(LostClaim, match=f"taken over by {new}"):
        fence.ensure(job_id)
