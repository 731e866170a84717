"""Contract: API tokens — created and revoked with their events (never the
secret's hash in them), a name unique among live tokens, looked up by hash,
the last use stamped at most once a minute."""

from __future__ import annotations

import json

import pytest

from ketter.audit.chain import Principal
from ketter.store.port import JobStore
from ketter.store.ports.tokens import TokenNameTaken

H1 = "a" * 64
H2 = "b" * 64
H3 = "c" * 64


def token_events(store: JobStore) -> list[tuple[str, str, dict]]:
    return [(e.event, e.user, json.loads(e.details)) for e in store.events_after(0, limit=100)]


def test_create_then_look_up_by_hash(job_store: JobStore) -> None:
    row = job_store.create_api_token(
        "mam", H1, ["transfers:read", "transfers:write"], ["dub-*"], expires_at=500.0, now=100.0
    )
    assert row.id > 0
    found = job_store.api_token_by_hash(H1)
    assert found == row
    assert (found.name, found.scopes, found.routes) == (
        "mam",
        ("transfers:read", "transfers:write"),
        ("dub-*",),
    )
    assert (found.created_at, found.expires_at, found.revoked_at, found.last_used_at) == (
        100.0,
        500.0,
        None,
        None,
    )
    assert found.created_by == job_store.chain.actor.as_user()
    assert job_store.api_token_by_hash(H2) is None
    assert job_store.api_tokens() == [row]


def test_events_name_the_token_never_its_hash(job_store: JobStore) -> None:
    ops = Principal("os-user", "alice")
    job_store.create_api_token("qc", H1, ["audit:read"], [], expires_at=None, now=1.0, actor=ops)
    revoked = job_store.revoke_api_token("qc", now=2.0, actor=Principal("os-user", "bob"))
    assert revoked is not None and (revoked.revoked_at, revoked.revoked_by) == (2.0, "bob")
    expected = {"token": "qc", "scopes": ["audit:read"], "routes": [], "expires_at": None}
    assert token_events(job_store) == [
        ("token_created", "alice", expected),
        ("token_revoked", "bob", expected),
    ]
    for event in job_store.events_after(0, limit=10):
        assert H1 not in event.details and H1 not in event.hash


def test_the_person_behind_the_account_is_in_the_events(job_store: JobStore) -> None:
    job_store.create_api_token("t", H1, ["audit:read"], [], expires_at=9.0, now=1.0, by="alice")
    job_store.revoke_api_token("t", now=2.0, by="bob")
    assert [(e, d.get("by")) for e, _, d in token_events(job_store)] == [
        ("token_created", "alice"),
        ("token_revoked", "bob"),
    ]


def test_a_live_name_is_unique_and_a_revoked_one_is_free(job_store: JobStore) -> None:
    job_store.create_api_token("mam", H1, ["metrics:read"], [], expires_at=None, now=1.0)
    with pytest.raises(TokenNameTaken, match="ketter token revoke mam"):
        job_store.create_api_token("mam", H2, ["metrics:read"], [], expires_at=None, now=2.0)
    assert [t.name for t in job_store.api_tokens()] == ["mam"]
    assert len(job_store.events_after(0, limit=10)) == 1  # the refusal wrote nothing
    job_store.revoke_api_token("mam", now=3.0)
    job_store.create_api_token("mam", H2, ["audit:read"], [], expires_at=None, now=4.0)
    tokens = job_store.api_tokens()
    assert [(t.name, t.revoked_at) for t in tokens] == [("mam", 3.0), ("mam", None)]
    # revoke names the live one, once
    assert job_store.revoke_api_token("mam", now=5.0) is not None
    assert job_store.revoke_api_token("mam", now=6.0) is None
    assert job_store.revoke_api_token("nobody", now=6.0) is None
    assert [e.event for e in job_store.events_after(0, limit=10)] == [
        "token_created",
        "token_revoked",
        "token_created",
        "token_revoked",
    ]
    assert job_store.api_token_by_hash(H1).revoked_at == 3.0  # type: ignore[union-attr]


def test_an_event_that_fails_rolls_the_token_back(job_store: JobStore) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), job_store.transaction():
        job_store.create_api_token("t", H1, ["audit:read"], [], expires_at=None, now=1.0)
        raise Boom
    assert job_store.api_tokens() == []
    assert job_store.events_after(0, limit=10) == []


def test_last_use_is_stamped_at_most_once_a_minute(job_store: JobStore) -> None:
    row = job_store.create_api_token("t", H3, ["audit:read"], [], expires_at=None, now=0.0)
    assert job_store.touch_api_token(row.id, now=100.0) is True
    assert job_store.touch_api_token(row.id, now=130.0) is False
    assert job_store.api_token_by_hash(H3).last_used_at == 100.0  # type: ignore[union-attr]
    assert job_store.touch_api_token(row.id, now=160.0) is True
    assert job_store.api_token_by_hash(H3).last_used_at == 160.0  # type: ignore[union-attr]
    assert job_store.touch_api_token(row.id + 99, now=500.0) is False
    assert len(job_store.events_after(0, limit=10)) == 1  # a use is no event
