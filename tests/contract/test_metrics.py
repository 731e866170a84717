"""Contract: the counters (counted by ``advance`` in the transition's
transaction) and the reads of a metrics scrape, on every backend."""

from __future__ import annotations

import pytest

from ketter.store.port import JobStore
from ketter.store.ports.jobs import JobChange
from ketter.store.ports.metrics import CounterTotal, JobCount
from tests.contract.seed import pause, put_job


def _totals(store: JobStore) -> dict[tuple[str, str], float]:
    return {(c.route, c.name): c.value for c in store.counter_totals()}


def _deliver(store: JobStore, job_id: int, *, now: float, move: bool = False) -> None:
    """detected → validated → transferring → verifying (a verified copy) →
    completed, as the runner writes them."""
    verified = {"verified": True, "bytes": 70, "resumed_from": 30, "seconds": 1.5}
    done = {"size": 100, "files": 2, "seconds": 1.5}
    changes = [
        JobChange("validated", "prepare"),
        JobChange("transferring", "copy"),
        JobChange("verifying", "verify", verified),
        JobChange(None, "place", {}, {"placed_at": now}),
    ]
    if move:
        changes.append(JobChange(None, "delete_source", {"deleted": 1}))
    changes.append(JobChange("completed", "complete", done, {"completed_at": now}))
    store.advance(job_id, "detected", changes, claim=None, now=now)


def test_a_delivery_counts_its_result_bytes_files_seconds_and_last_success(
    job_store: JobStore,
) -> None:
    _deliver(job_store, put_job(job_store, route="a"), now=100.0, move=True)
    _deliver(job_store, put_job(job_store, route="a"), now=90.0)
    assert _totals(job_store) == {
        ("a", "transfers.completed"): 2,
        ("a", "bytes_verified"): 200,
        ("a", "files_transferred"): 4,
        ("a", "transfer_seconds"): 3.0,
        ("a", "source_deletes"): 1,
        ("a", "last_success_at"): 100.0,  # the latest, never lowered
    }
    assert job_store.counter_totals()[0] == CounterTotal("a", "bytes_verified", 200)


def test_retries_failures_and_verify_failures_count_by_route(job_store: JobStore) -> None:
    job_id = put_job(job_store, route="b", state="verifying")
    mismatch = {"error": "checksum mismatch", "verify_mismatch": True}
    job_store.advance(
        job_id, "verifying", [JobChange("rolling_back", "rollback", mismatch)], claim=None, now=1.0
    )
    job_store.advance(
        job_id, "rolling_back", [JobChange("retry_wait", "retry")], claim=None, now=2.0
    )
    job_store.advance(job_id, "retry_wait", [JobChange("detected", "requeue")], claim=None, now=3.0)
    job_store.advance(
        job_id,
        "detected",
        [JobChange("rolling_back", "rollback"), JobChange("failed", "fail")],
        claim=None,
        now=4.0,
    )
    # A note in retry_wait is not a retry; a state kept is not a new result.
    other = put_job(job_store, route="c", state="retry_wait")
    job_store.advance(other, "retry_wait", [JobChange(None, "retry")], claim=None, now=5.0)
    assert _totals(job_store) == {
        ("b", "verify_failures"): 1,
        ("b", "retries"): 1,
        ("b", "transfers.failed"): 1,
    }


def test_superseded_and_any_terminal_state_count_as_a_result(job_store: JobStore) -> None:
    job_id = put_job(job_store, route="a", state="rolling_back")
    job_store.advance(
        job_id, "rolling_back", [JobChange("superseded", "supersede")], claim=None, now=1.0
    )
    cancelled = put_job(job_store, route="a", state="rolling_back")
    job_store.advance(
        cancelled, "rolling_back", [JobChange("cancelled", "cancel")], claim=None, now=2.0
    )
    assert _totals(job_store) == {("a", "transfers.superseded"): 1, ("a", "transfers.cancelled"): 1}


def test_a_refused_transition_counts_nothing(job_store: JobStore) -> None:
    job_id = put_job(job_store, route="a", claim="mine")
    with pytest.raises(Exception, match="claim"):
        job_store.advance(
            job_id,
            "detected",
            [JobChange("validated", "prepare"), JobChange("completed", "complete", {"size": 1})],
            claim="stolen",
            now=1.0,
        )
    # The second change of a transaction is refused: the first is rolled
    # back with its count.
    job_id = put_job(job_store, route="a", state="verifying", placed_at=3.0)
    with pytest.raises(Exception, match="placed"):
        job_store.advance(
            job_id,
            "verifying",
            [
                JobChange("retry_wait", "retry"),  # counted, then undone
                JobChange("rolling_back", "rollback", only_unplaced=True),
            ],
            claim=None,
            now=1.0,
        )
    assert _totals(job_store) == {}


def test_a_shared_commit_counts_what_holds_once_and_a_refused_job_nothing(
    job_store: JobStore,
) -> None:
    """The batch's shared commit (tried whole first, then job by job when
    one is refused): the counters of the jobs that hold are counted once,
    not twice; the refused job's, not at all; the chain has no gap."""
    a, b, c = (put_job(job_store, route="a") for _ in range(3))
    stolen = put_job(job_store, route="a", claim="someone-else")

    def refused() -> None:
        _deliver(job_store, stolen, now=50.0)  # claim None: refused

    outcomes = job_store.commit_together(
        [
            lambda: _deliver(job_store, a, now=10.0),
            lambda: _deliver(job_store, b, now=30.0),
            refused,
            lambda: _deliver(job_store, c, now=20.0),
        ]
    )
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "NoneType", "LostClaim", "NoneType"]
    assert _totals(job_store) == {
        ("a", "transfers.completed"): 3,
        ("a", "bytes_verified"): 300,
        ("a", "files_transferred"): 6,
        ("a", "transfer_seconds"): 4.5,
        ("a", "last_success_at"): 30.0,
    }
    seqs = [e.id for e in job_store.events_after(0, limit=100)]
    assert seqs == list(range(1, 16))  # 3 jobs × 5 events, no gap
    assert {e.job_id for e in job_store.events_after(0, limit=100)} == {a, b, c}


def test_a_shared_commit_of_deliveries_holds_whole(job_store: JobStore) -> None:
    """Every job of a shared commit holds (on PostgreSQL: their transitions
    sent in one pipeline): each job completed once, counted once, its five
    events in one unbroken chain."""
    jobs = [put_job(job_store, route="a") for _ in range(4)]
    outcomes = job_store.commit_together(
        [lambda j=j: _deliver(job_store, j, now=float(j)) for j in jobs]
    )
    assert outcomes == [None] * 4
    assert [job_store.get_job(j).state for j in jobs] == ["completed"] * 4
    assert _totals(job_store)[("a", "transfers.completed")] == 4
    events = job_store.events_after(0, limit=100)
    assert [e.id for e in events] == list(range(1, 21))
    assert [e.job_id for e in events] == [j for j in jobs for _ in range(5)]
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]


def test_a_savepoint_rolled_back_takes_its_counts_and_its_events_back(
    job_store: JobStore,
) -> None:
    """Inside one transaction: what a rolled-back savepoint counted and
    appended is gone; what came before and after it holds, in sequence."""
    first, second, third = (put_job(job_store, route="a") for _ in range(3))
    with job_store.transaction():
        _deliver(job_store, first, now=10.0)
        with pytest.raises(ZeroDivisionError), job_store.transaction():
            _deliver(job_store, second, now=20.0)
            1 / 0  # noqa: B018
        _deliver(job_store, third, now=15.0)
    totals = _totals(job_store)
    assert totals[("a", "transfers.completed")] == 2
    assert totals[("a", "last_success_at")] == 15.0
    events = job_store.events_after(0, limit=100)
    assert [e.id for e in events] == list(range(1, 11))
    assert {e.job_id for e in events} == {first, third}
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]


def test_counters_never_fall_when_jobs_move_on(job_store: JobStore) -> None:
    job_id = put_job(job_store, route="a", state="verifying")
    job_store.advance(job_id, "verifying", [JobChange("failed", "fail")], claim=None, now=1.0)
    job_store.advance(job_id, "failed", [JobChange("detected", "requeue")], claim=None, now=2.0)
    _deliver(job_store, job_id, now=3.0)
    totals = _totals(job_store)
    assert (totals[("a", "transfers.failed")], totals[("a", "transfers.completed")]) == (1, 1)


def test_job_counts_follow_inserts_and_transitions(job_store: JobStore) -> None:
    assert job_store.job_counts() == []
    first = put_job(job_store, route="a")
    put_job(job_store, route="a")
    put_job(job_store, route="b", state="failed")
    _deliver(job_store, first, now=5.0)
    assert job_store.job_counts() == [
        JobCount("a", "completed", 1),
        JobCount("a", "detected", 1),
        JobCount("b", "failed", 1),
    ]


def test_oldest_created_per_route_and_state(job_store: JobStore) -> None:
    put_job(job_store, route="a", created_at=50.0)
    put_job(job_store, route="a", created_at=20.0)
    put_job(job_store, route="a", state="completed", created_at=1.0)
    assert job_store.oldest_created("a", "detected") == 20.0
    assert job_store.oldest_created("a", "retry_wait") is None
    assert job_store.oldest_created("b", "detected") is None


def test_scrape_facts_gathers_every_read(job_store: JobStore) -> None:
    put_job(job_store, route="a", created_at=50.0)
    put_job(job_store, route="a", state="retry_wait", created_at=30.0)
    put_job(job_store, route="b", state="transferring", created_at=1.0)  # held: not waiting
    put_job(job_store, route="c", state="completed", created_at=1.0)
    _deliver(job_store, put_job(job_store, route="c", created_at=2.0), now=9.0)
    pause(job_store, "b")
    job_store.hold_route("b", reason="maintenance", now=8.0)  # held and paused: one row
    job_store.hold_route("d", reason="maintenance", now=8.0)
    job_store.beat("n1", {"workers": "{}"}, pid=7, now=8.0)
    facts = job_store.scrape_facts()
    assert facts.oldest_waiting == {"a": 30.0}
    assert [(c.route, c.state, c.jobs) for c in facts.jobs] == [
        ("a", "detected", 1),
        ("a", "retry_wait", 1),
        ("b", "transferring", 1),
        ("c", "completed", 2),
    ]
    assert ("c", "last_success_at", 9.0) in [(c.route, c.name, c.value) for c in facts.counters]
    assert [(p.route, p.paused, p.held) for p in facts.paused] == [("b", 1, 1), ("d", 0, 1)]
    assert [(h.component, h.ts) for h in facts.heartbeats] == [("workers", 8.0)]
