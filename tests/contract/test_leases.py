"""Contract: claims with fencing tokens, renewal, release, the sweep's counts, re-queue."""

from __future__ import annotations

import json

import pytest

from ketter.store.port import JobStore
from ketter.store.ports.leases import Mates, Taken
from tests.contract.seed import events_of, pause, put_job

TTL = 30.0


def claim(store: JobStore, routes: dict[str, int] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    args: dict = {"hint": None, "owner": "n1/1/w", "now": 100.0, "ttl": TTL, **kw}
    return store.claim_next(routes if routes is not None else {"r": 0}, **args)


def test_claim_takes_the_hint_with_a_token_lease_and_event(job_store: JobStore) -> None:
    put_job(job_store)
    hinted = put_job(job_store)
    got = claim(job_store, hint=hinted)
    assert got is not None and got.row.id == hinted
    assert (got.recovered, got.released, got.previous_owner) == (False, False, None)
    job = job_store.get_job(hinted)
    assert job.claim == got.claim and len(got.claim) == 12
    assert (job.lease_owner, job.lease_expires_at, job.attempt) == ("n1/1/w", 100.0 + TTL, 1)
    assert (job.started_at, job.progress_at, job.updated_at) == (100.0, 100.0, 100.0)
    assert got.row == job  # the row as the claim left it
    assert events_of(job_store, hinted) == [("claim", "detected", "detected", 1)]


def test_claim_takes_the_best_due_job_otherwise(job_store: JobStore) -> None:
    put_job(job_store)
    best = put_job(job_store, priority=5)
    put_job(job_store, priority=9, next_attempt_at=200.0)  # not due
    put_job(job_store, priority=9, state="completed")  # finished
    other = put_job(job_store, priority=9, route="gone")  # not a route of the config
    got = claim(job_store, hint=other)
    assert got is not None and got.row.id == best


def test_nothing_due_nothing_claimed(job_store: JobStore) -> None:
    held = put_job(job_store, lease_owner="x", lease_expires_at=150.0, claim="c")
    assert claim(job_store) is None
    assert claim(job_store, hint=held) is None
    assert claim(job_store, {}) is None


def test_paused_routes_and_max_parallel_are_respected(job_store: JobStore) -> None:
    put_job(job_store, route="p")
    pause(job_store, "p")
    assert job_store.paused_route_names() == {"p"}
    assert claim(job_store, {"p": 0}) is None
    put_job(job_store, route="one", lease_owner="x", lease_expires_at=150.0, claim="c")
    put_job(job_store, route="one")
    assert claim(job_store, {"one": 1}) is None
    assert claim(job_store, {"one": 2}) is not None


def test_an_expired_lease_is_recovered_and_uses_an_attempt(job_store: JobStore) -> None:
    job_id = put_job(
        job_store,
        state="transferring",
        claim="old",
        lease_owner="n1/9/w",
        lease_expires_at=50.0,
        attempt=2,
        started_at=10.0,
    )
    got = claim(job_store)
    assert got is not None and (got.recovered, got.released) == (True, False)
    assert got.previous_owner == "n1/9/w" and got.claim != "old"
    job = job_store.get_job(job_id)
    assert (job.attempt, job.started_at) == (3, 10.0)
    assert events_of(job_store, job_id) == [("recover", "transferring", "transferring", 3)]


def test_a_released_job_resumes_without_using_an_attempt(job_store: JobStore) -> None:
    job_id = put_job(job_store, state="transferring", claim="c", lease_owner="me", attempt=1)
    assert not job_store.release_lease(job_id, "other", now=60.0, reason="shutdown")
    assert job_store.release_lease(job_id, "c", now=60.0, reason="shutdown", bytes_done=77)
    job = job_store.get_job(job_id)
    assert (job.claim, job.lease_owner, job.lease_expires_at) == (None, None, None)
    assert (job.next_attempt_at, job.updated_at, job.bytes_done) == (60.0, 60.0, 77)
    got = claim(job_store)
    assert got is not None and (got.recovered, got.released) == (False, True)
    assert job_store.get_job(job_id).attempt == 1
    assert [e[0] for e in events_of(job_store, job_id)] == ["release", "resume"]
    (release,) = [e for e in job_store.events_after(0, limit=9) if e.event == "release"]
    assert json.loads(release.details) == {"reason": "shutdown", "bytes_done": 77}


def test_release_keeps_the_rows_progress_when_not_told(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="c", lease_owner="me", bytes_done=5)
    assert job_store.release_lease(job_id, "c", now=60.0, reason="shutdown")
    assert job_store.get_job(job_id).bytes_done == 5


def test_claim_batch_takes_fresh_small_files_of_the_route(job_store: JobStore) -> None:
    a = put_job(job_store, route="b", source_size=5)
    put_job(job_store, route="b", source_size=50)  # too big
    put_job(job_store, route="b", kind="folder", source_size=5)
    put_job(job_store, route="b", mode="move", source_size=5)
    put_job(job_store, route="b", state="retry_wait", source_size=5)
    c = put_job(job_store, route="b", source_size=5, priority=1)
    d = put_job(job_store, route="b", source_size=5)
    got = job_store.claim_batch(
        "b", max_parallel=0, owner="o", now=100.0, ttl=TTL, limit=2, max_size=10, mode="copy"
    )
    assert [t.row.id for t in got] == [c, a]
    assert len({t.claim for t in got}) == 2
    assert (
        job_store.claim_batch(
            "b", max_parallel=2, owner="o", now=100.0, ttl=TTL, limit=5, max_size=10, mode="copy"
        )
        == []
    )  # both slots taken
    more = job_store.claim_batch(
        "b", max_parallel=3, owner="o", now=100.0, ttl=TTL, limit=5, max_size=10, mode="copy"
    )
    assert [t.row.id for t in more] == [d]
    pause(job_store, "b")
    put_job(job_store, route="b", source_size=5)
    assert (
        job_store.claim_batch(
            "b", max_parallel=0, owner="o", now=100.0, ttl=TTL, limit=5, max_size=10, mode="copy"
        )
        == []
    )


def test_claim_next_takes_the_mates_it_is_asked_for_in_its_transaction(
    job_store: JobStore,
) -> None:
    """A batch's first job and its mates in one claim: the callback sees the
    job taken; the mates are what claim_batch would take, within the route's
    max_parallel counting the first job; a callback that answers None takes
    none, and one that raises takes nothing at all."""
    first = put_job(job_store, route="b", source_size=5)
    mates = [put_job(job_store, route="b", source_size=5) for _ in range(4)]
    put_job(job_store, route="b", source_size=50)  # too big to be a mate
    asked: list[Taken] = []

    def ask(taken: Taken) -> Mates:
        asked.append(taken)
        return Mates(limit=15, max_size=10, mode="copy", max_parallel=3)

    got = claim(job_store, {"b": 3}, hint=first, mates=ask)
    assert got is not None and got.row.id == first
    assert [t.row.id for t in asked] == [first]
    # max_parallel 3: the first job holds one slot, two mates the others.
    assert [m.row.id for m in got.mates] == mates[:2]
    assert len({got.claim, *(m.claim for m in got.mates)}) == 3
    for taken in (got, *got.mates):
        job = job_store.get_job(taken.row.id)
        assert (job.claim, job.lease_owner) == (taken.claim, "n1/1/w")
        assert events_of(job_store, taken.row.id) == [("claim", "detected", "detected", 1)]
    assert claim(job_store, {"b": 3}, mates=ask) is None  # the route is full
    alone = claim(job_store, {"b": 0}, mates=lambda taken: None)
    assert alone is not None and alone.row.id == mates[2] and alone.mates == ()

    def broken(taken: Taken) -> Mates:
        raise RuntimeError("a bug in the callback")

    with pytest.raises(RuntimeError, match="a bug"):
        claim(job_store, {"b": 0}, mates=broken)
    job = job_store.get_job(mates[3])
    assert (job.claim, job.lease_owner) == (None, None)  # rolled back with the claim
    assert events_of(job_store, mates[3]) == []


def test_renew_needs_the_claim(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="c", lease_owner="me", lease_expires_at=1.0)
    assert not job_store.renew_lease(job_id, "other", now=8.0, ttl=1.0)
    assert job_store.renew_lease(job_id, "c", now=8.0, ttl=1.0)
    assert job_store.get_job(job_id).lease_expires_at == 9.0
    assert job_store.renew_lease(job_id, "c", now=8.0, ttl=2.0, bytes_done=4, progress_at=8.0)
    job = job_store.get_job(job_id)
    assert (job.lease_expires_at, job.bytes_done, job.progress_at) == (10.0, 4, 8.0)
    assert job_store.claim_holder(job_id) == "c"
    assert job_store.claim_holder(job_id + 9) is None


def test_leases_held_reads_what_each_claim_has_left(job_store: JobStore) -> None:
    """One read for a batch's placements (ketter.jobs.fence): the seconds
    left on the lease of each job its claim still holds; a job taken over,
    released or gone is left out."""
    mine = put_job(job_store, claim="c1", lease_owner="me", lease_expires_at=130.0)
    ran_out = put_job(job_store, claim="c2", lease_owner="me", lease_expires_at=90.0)
    no_lease = put_job(job_store, claim="c3", lease_owner=None, lease_expires_at=None)
    taken = put_job(job_store, claim="theirs", lease_owner="you", lease_expires_at=140.0)
    released = put_job(job_store, claim=None, lease_owner=None, lease_expires_at=None)
    asked = {mine: "c1", ran_out: "c2", no_lease: "c3", taken: "c4", released: "c5"}
    asked[released + 99] = "c6"  # no such job
    held = job_store.leases_held(asked, now=100.0)
    assert held == {mine: 30.0, ran_out: -10.0, no_lease: 0.0}
    assert job_store.leases_held({}, now=100.0) == {}


def test_let_go_drops_the_lease_and_uses_an_attempt(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="c", lease_owner="me", lease_expires_at=1.0, attempt=2)
    assert not job_store.let_go(job_id, "other", next_attempt_at=5.0)
    assert job_store.let_go(job_id, "c", next_attempt_at=5.0)
    job = job_store.get_job(job_id)
    assert (job.claim, job.lease_owner, job.lease_expires_at) == ("c", None, None)
    assert (job.next_attempt_at, job.attempt) == (5.0, 3)


def test_due_jobs_best_first_within_free_slots(job_store: JobStore) -> None:
    a = put_job(job_store, route="free")
    b = put_job(job_store, route="free", priority=2)
    put_job(job_store, route="free", next_attempt_at=500.0)
    put_job(job_store, route="free", lease_owner="x", lease_expires_at=500.0, claim="c")
    put_job(job_store, route="two", lease_owner="x", lease_expires_at=500.0, claim="c")
    c = put_job(job_store, route="two", priority=1)
    put_job(job_store, route="two")  # only one free slot on "two"
    put_job(job_store, route="p")
    pause(job_store, "p")
    routes = {"free": 0, "two": 2, "p": 0}
    assert job_store.due_job_ids(routes, now=100.0, limit=10) == [b, c, a]
    assert job_store.due_job_ids(routes, now=100.0, limit=2) == [b, c]


def test_a_full_route_does_not_hide_another_routes_due_job(job_store: JobStore) -> None:
    """A doorbell whose job was taken claims the best due job of a route with
    a free slot: "busy" (max_parallel 1) is full with more than 64 older jobs
    waiting, and the one due job of "other" is still found."""
    put_job(job_store, route="busy", lease_owner="x", lease_expires_at=500.0, claim="c")
    waiting = [put_job(job_store, route="busy") for _ in range(70)]
    due = put_job(job_store, route="other")
    routes = {"busy": 1, "other": 0}
    taken = job_store.claim_next(routes, hint=waiting[0], owner="w/1", now=100.0, ttl=30.0)
    assert taken is not None and taken.row.id == due


def test_expired_leases_are_counted(job_store: JobStore) -> None:
    put_job(job_store, lease_owner="x", lease_expires_at=50.0, claim="c")
    put_job(job_store, lease_owner="x", lease_expires_at=500.0, claim="c")
    put_job(job_store, lease_owner="x", lease_expires_at=50.0, state="failed")
    put_job(job_store)
    assert job_store.expired_lease_count(100.0) == 1


def test_smallest_waiting_size(job_store: JobStore) -> None:
    assert job_store.smallest_waiting_size("r") is None
    put_job(job_store, size=0, source_size=40)
    put_job(job_store, size=30, source_size=99)
    put_job(job_store, size=1, state="completed")
    put_job(job_store, route="other", size=2)
    assert job_store.smallest_waiting_size("r") == 30


def test_is_active(job_store: JobStore) -> None:
    active = put_job(job_store, state="retry_wait")
    done = put_job(job_store, state="superseded")
    assert job_store.is_active(active) and not job_store.is_active(done)
    assert not job_store.is_active(done + 9)


def test_make_due_now_only_for_a_waiting_job(job_store: JobStore) -> None:
    waiting = put_job(job_store, state="retry_wait", next_attempt_at=500.0, attempt=4)
    failed = put_job(job_store, state="failed")
    assert not job_store.make_due_now(failed, now=100.0, by="ops")
    assert job_store.make_due_now(waiting, now=100.0, by="ops")
    job = job_store.get_job(waiting)
    assert (job.next_attempt_at, job.attempt, job.updated_at) == (100.0, 0, 100.0)
    assert events_of(job_store, waiting) == [("requeue", "retry_wait", "retry_wait", 0)]
    assert events_of(job_store, failed) == []
    (event,) = job_store.events_after(0, limit=9)
    assert json.loads(event.details) == {"by": "ops", "was_due_at": 500.0}
