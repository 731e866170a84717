"""Contract: reading jobs, the compare-and-set, advance and the runner's updates."""

from __future__ import annotations

import pytest

from ketter.errors import InvalidTransition, LostClaim
from ketter.store.port import JobStore
from ketter.store.ports.jobs import JobChange
from ketter.store.rows import NoSuchJob
from tests.contract.seed import events_of, put_job


def test_get_and_find(job_store: JobStore) -> None:
    job_id = put_job(job_store, source_path=b"/src/\xff", priority=3)
    job = job_store.get_job(job_id)
    assert (job.id, job.state, job.source_path, job.priority) == (
        job_id,
        "detected",
        b"/src/\xff",
        3,
    )
    assert job_store.find_job(job_id) == job
    assert job_store.find_job(job_id + 99) is None
    with pytest.raises(NoSuchJob):
        job_store.get_job(job_id + 99)


def test_a_row_handed_out_is_a_copy(job_store: JobStore) -> None:
    job_id = put_job(job_store)
    job_store.get_job(job_id).state = "failed"
    assert job_store.get_job(job_id).state == "detected"


def test_job_ids_filter_in_id_order(job_store: JobStore) -> None:
    a = put_job(job_store, state="failed", route="x", updated_at=5.0)
    b = put_job(job_store, state="failed", route="y", updated_at=1.0)
    c = put_job(job_store, state="detected", route="x")
    assert job_store.job_ids(state="failed") == [a, b]
    assert job_store.job_ids(state="failed", route="x") == [a]
    assert job_store.job_ids(state="failed", updated_since=2.0) == [a]
    assert job_store.job_ids() == [a, b, c]


def test_compare_and_set_matches_state_and_claim(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="t1")
    set_ = job_store.compare_and_set
    assert not set_(job_id, state="detected", claim=None, values={"error": "x"})
    assert not set_(job_id, state="validated", claim="t1", values={"error": "x"})
    assert set_(job_id, state="detected", claim="t1", values={"error": "x", "size": 5})
    job = job_store.get_job(job_id)
    assert (job.error, job.size) == ("x", 5)
    unclaimed = put_job(job_store)
    assert set_(unclaimed, state="detected", claim=None, values={"error": "y"})


def test_compare_and_set_refuses_unknown_columns_and_placed(job_store: JobStore) -> None:
    job_id = put_job(job_store, placed_at=3.0)
    with pytest.raises(ValueError, match="not a jobs column"):
        job_store.compare_and_set(job_id, state="detected", claim=None, values={"nope": 1})
    assert not job_store.compare_and_set(
        job_id, state="detected", claim=None, values={"error": "x"}, only_unplaced=True
    )
    assert job_store.compare_and_set(job_id, state="detected", claim=None, values={"error": "x"})


def test_advance_writes_each_change_with_its_event(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="t", attempt=1)
    end = job_store.advance(
        job_id,
        "detected",
        [
            JobChange("validated", "prepare", {"a": 1}),
            JobChange(None, "place", None, {"placed_at": 7.0}),
            JobChange("transferring", "copy", None, {"attempt": 2}),
        ],
        claim="t",
        now=9.0,
        durable=True,
    )
    assert end == "transferring"
    job = job_store.get_job(job_id)
    assert (job.state, job.placed_at, job.attempt, job.updated_at) == ("transferring", 7.0, 2, 9.0)
    assert events_of(job_store, job_id) == [
        ("prepare", "detected", "validated", 1),
        ("place", "validated", "validated", 1),
        ("copy", "validated", "transferring", 2),
    ]
    routes = {e.route for e in job_store.events_after(0, limit=10)}
    assert routes == {"r"}


def test_advance_is_all_or_nothing(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="t", placed_at=2.0)
    with pytest.raises(InvalidTransition, match="placed"):
        job_store.advance(
            job_id,
            "detected",
            [
                JobChange("validated", "prepare"),
                JobChange("rolling_back", "rollback", only_unplaced=True),
            ],
            claim="t",
            now=5.0,
        )
    assert job_store.get_job(job_id).state == "detected"
    assert events_of(job_store, job_id) == []


def test_advance_in_a_caller_transaction_rolls_back_with_it(job_store: JobStore) -> None:
    job_id = put_job(job_store)
    with pytest.raises(KeyError), job_store.transaction():
        job_store.advance(
            job_id, "detected", [JobChange("validated", "prepare")], claim=None, now=2.0
        )
        raise KeyError("x")
    assert job_store.get_job(job_id).state == "detected"
    assert job_store.events_after(0, limit=10) == []


def test_advance_uses_the_given_route_and_attempt(job_store: JobStore) -> None:
    job_id = put_job(job_store)
    job_store.advance(
        job_id,
        "detected",
        [JobChange("validated", "prepare")],
        claim=None,
        now=2.0,
        route="given",
        attempt=4,
    )
    (event,) = job_store.events_after(0, limit=10)
    assert (event.route, event.attempt) == ("given", 4)


def test_refusals_explain_themselves(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="theirs", state="transferring")
    with pytest.raises(LostClaim, match="claim mine is no longer held"):
        job_store.advance(
            job_id, "transferring", [JobChange("verifying", "verify")], claim="mine", now=2.0
        )
    with pytest.raises(InvalidTransition, match="is transferring, not detected"):
        job_store.advance(
            job_id, "detected", [JobChange("validated", "prepare")], claim="theirs", now=2.0
        )
    with pytest.raises(InvalidTransition, match="does not exist"):
        job_store.advance(
            job_id + 9, "detected", [JobChange("validated", "prepare")], claim=None, now=2.0
        )
    refused = job_store.refusal(job_id + 9, "detected", "validated", None)
    assert "does not exist" in str(refused)


def test_set_attempt_needs_the_claim(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="t", attempt=3)
    assert not job_store.set_attempt(job_id, "other", 1)
    assert job_store.set_attempt(job_id, "t", 2)
    assert job_store.get_job(job_id).attempt == 2
    unclaimed = put_job(job_store, attempt=3)
    assert not job_store.set_attempt(unclaimed, None, 1)  # type: ignore[arg-type]


def test_set_error(job_store: JobStore) -> None:
    job_id = put_job(job_store, claim="t")
    job_store.set_error(job_id, "broken")
    assert job_store.get_job(job_id).error == "broken"
