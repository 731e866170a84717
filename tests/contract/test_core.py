"""Contract: transactions and the audit chain's appends."""

from __future__ import annotations

import pytest

from ketter.audit.chain import GENESIS, MayNotAppend, Principal, hashed_fields, record_hash
from ketter.events import Event
from ketter.store.port import JobStore


def test_an_event_outside_a_transaction_is_refused(job_store: JobStore) -> None:
    with pytest.raises(RuntimeError, match="inside"):
        job_store.append_event("detect", now=1.0, job_id=1)


def test_events_chain_from_genesis_with_the_actor(job_store: JobStore) -> None:
    with job_store.transaction():
        first = job_store.append_event("detect", now=1.0, job_id=1, route="r")
        second = job_store.append_event(
            "detect", now=2.0, job_id=2, actor=Principal("token", "mam")
        )
    assert (first, second) == (1, 2)
    rows = job_store.events_after(0, limit=10)
    assert [r.id for r in rows] == [1, 2]
    assert rows[0].prev_hash == GENESIS and rows[1].prev_hash == rows[0].hash
    assert rows[1].user == "token:mam"
    for row in rows:
        assert row.hash == record_hash(row.prev_hash, hashed_fields(row.as_dict()))


def test_a_rolled_back_event_is_neither_kept_nor_published(job_store: JobStore) -> None:
    seen: list[Event] = []
    job_store.chain.bus.subscribe("*", seen.append)
    with pytest.raises(ZeroDivisionError), job_store.transaction():
        job_store.append_event("detect", now=1.0, job_id=1)
        1 / 0  # noqa: B018
    assert job_store.events_after(0, limit=10) == [] and seen == []
    with job_store.transaction():
        job_store.append_event("detect", now=1.0, job_id=1)
        assert seen == []  # not before the commit
    assert [e.seq for e in seen] == [1]


def test_a_nested_block_rolls_back_alone(job_store: JobStore) -> None:
    with job_store.transaction():
        job_store.append_event("detect", now=1.0, job_id=1)
        with pytest.raises(KeyError), job_store.transaction():
            job_store.append_event("detect", now=2.0, job_id=2)
            raise KeyError("x")
    assert [r.job_id for r in job_store.events_after(0, limit=10)] == [1]


def test_durable_does_not_nest(job_store: JobStore) -> None:
    with job_store.transaction(durable=True):
        job_store.append_event("detect", now=1.0, job_id=1)
    with pytest.raises(RuntimeError), job_store.transaction(), job_store.transaction(durable=True):
        pass


def test_a_role_without_the_key_may_not_append(job_store: JobStore) -> None:
    from dataclasses import replace

    job_store.chain = replace(job_store.chain, may_append=False)
    with pytest.raises(MayNotAppend), job_store.transaction():
        job_store.append_event("detect", now=1.0, job_id=1)
