"""The authorization decision (ketter.access.policy): every scope x route
case, and every way a presented token is refused, on the in-memory store
(the store itself runs the contract suite)."""

from __future__ import annotations

import itertools

import pytest

from ketter.access.policy import REASONS, Grant, Unauthenticated, authenticate, bearer_token
from ketter.access.scopes import ROUTE_SCOPES, SCOPES, Scope
from ketter.access.tokens import (
    TOKEN_PREFIX,
    InvalidToken,
    NoSuchToken,
    TokenNameTaken,
    create_token,
    list_tokens,
    revoke_token,
    secret_sha256,
)
from ketter.audit.chain import AuditChain, Principal
from ketter.store.memory import MemoryJobStore

ROUTES = ("dub-fr", "dub-de", "qc-1", "ingest")


@pytest.fixture
def store() -> MemoryJobStore:
    return MemoryJobStore(AuditChain(node="n1"))


# -- the grant: scope x route ----------------------------------------------------------

GLOBS = {"dub": ("dub-*",), "every": ("*",), "two": ("dub-fr", "qc-?"), "none": ()}


@pytest.mark.parametrize(
    ("held", "globs", "wanted", "route"),
    list(itertools.product(SCOPES, GLOBS, SCOPES, (None, *ROUTES))),
)
def test_permits_every_scope_and_route(
    held: Scope, globs: str, wanted: Scope, route: str | None
) -> None:
    grant = Grant(token="t", scopes=frozenset({held}), routes=GLOBS[globs])
    covered = {
        "dub": {"dub-fr", "dub-de"},
        "every": set(ROUTES),
        "two": {"dub-fr", "qc-1"},
        "none": set(),
    }[globs]
    expected = held == wanted and (route is None or route in covered)
    assert grant.permits(wanted, route) is expected
    assert grant.permits(str(wanted), route) is expected  # plain text works too
    if route is not None:
        assert grant.visible(route) is (route in covered)


def test_visible_routes_keep_the_order_given() -> None:
    grant = Grant(token="t", scopes=frozenset({Scope.TRANSFERS_READ}), routes=("qc-?", "dub-*"))
    assert grant.visible_routes(ROUTES) == ("dub-fr", "dub-de", "qc-1")
    assert Grant(token="t", scopes=frozenset(), routes=()).visible_routes(ROUTES) == ()


def test_a_grant_with_no_scope_permits_nothing() -> None:
    grant = Grant(token="t", scopes=frozenset(), routes=("*",))
    assert not any(grant.permits(s, r) for s in SCOPES for r in (None, *ROUTES))


def test_an_unknown_scope_is_a_bug_not_a_denial() -> None:
    grant = Grant(token="t", scopes=frozenset(SCOPES), routes=("*",))
    with pytest.raises(ValueError):
        grant.permits("transfer:read")


def test_the_grant_acts_as_its_token() -> None:
    grant = Grant(token="mam", scopes=frozenset(), routes=())
    assert grant.principal == Principal("token", "mam")
    assert grant.principal.as_user() == "token:mam"


# -- authenticate -----------------------------------------------------------------------


def test_a_live_token_authenticates_to_its_grant(store: MemoryJobStore) -> None:
    secret = create_token(
        store, "mam", "transfers:read,transfers:write", "dub-*", 1000.0, now=100.0
    )
    assert secret.startswith(TOKEN_PREFIX) and len(secret) == len(TOKEN_PREFIX) + 43
    grant = authenticate(store, secret, now=200.0)
    assert grant == Grant(
        token="mam",
        scopes=frozenset({Scope.TRANSFERS_READ, Scope.TRANSFERS_WRITE}),
        routes=("dub-*",),
        expires_at=1000.0,
    )
    assert grant.permits("transfers:write", "dub-fr")
    assert not grant.permits("transfers:write", "qc-1")
    assert not grant.permits("transfers:cancel", "dub-fr")
    # its last use, at most once a minute
    assert [t.last_used_at for t in list_tokens(store)] == [200.0]
    authenticate(store, secret, now=230.0)
    assert [t.last_used_at for t in list_tokens(store)] == [200.0]


def reason(store: MemoryJobStore, presented: str | None, now: float = 500.0) -> tuple:
    with pytest.raises(Unauthenticated) as caught:
        authenticate(store, presented, now=now)
    assert caught.value.reason in REASONS
    return caught.value.reason, caught.value.token


def test_every_refusal_has_its_reason(store: MemoryJobStore) -> None:
    live = create_token(store, "live", "audit:read", "", None, now=1.0)
    expiring = create_token(store, "expiring", "audit:read", "", 500.0, now=1.0)
    revoked = create_token(store, "gone", "audit:read", "", None, now=1.0)
    revoke_token(store, "gone", now=2.0)

    assert reason(store, None) == ("missing", None)
    assert reason(store, "") == ("missing", None)
    for malformed in (
        "x",
        "Bearer " + live,
        live + "x",
        live[:-1],
        live + "\n",
        "ketter_" + "!" * 43,
        "KETTER_" + live[7:],
        live.replace("ketter_", "ketter-"),
        "\x00" * 50,
        "ketter_" + "a" * 4096,
    ):
        assert reason(store, malformed) == ("malformed", None), malformed
    # well formed, never made (the last character changed: not a near miss either)
    other = live[:-1] + ("A" if live[-1] != "A" else "B")
    assert reason(store, other) == ("unknown", None)
    assert reason(store, revoked) == ("revoked", "gone")
    assert reason(store, expiring, now=500.0) == ("expired", "expiring")  # at the second
    assert reason(store, expiring, now=10_000.0) == ("expired", "expiring")
    assert authenticate(store, expiring, now=499.9).token == "expiring"
    assert authenticate(store, live, now=10**10).token == "live"  # no expiry


def test_revoked_wins_over_expired(store: MemoryJobStore) -> None:
    secret = create_token(store, "t", "audit:read", "", 50.0, now=1.0)
    revoke_token(store, "t", now=60.0)
    assert reason(store, secret, now=100.0) == ("revoked", "t")


def test_a_revoked_name_given_again_is_a_new_secret(store: MemoryJobStore) -> None:
    old = create_token(store, "mam", "audit:read", "", None, now=1.0)
    revoke_token(store, "mam", now=2.0)
    new = create_token(store, "mam", "metrics:read", "", None, now=3.0)
    assert new != old
    assert reason(store, old) == ("revoked", "mam")
    assert authenticate(store, new, now=4.0).scopes == {Scope.METRICS_READ}


def test_only_the_hash_is_stored(store: MemoryJobStore) -> None:
    secret = create_token(store, "t", "audit:read", "", None, now=1.0)
    (row,) = store.api_tokens()
    assert row.secret_sha256 == secret_sha256(secret)
    assert secret not in repr(store.tables)
    for event in store.events_after(0, limit=10):
        assert secret not in repr(event) and row.secret_sha256 not in event.details


# -- making tokens ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a:b", "a/b", "x" * 65, "é", "a\nb", "a*"])
def test_bad_names_are_refused(store: MemoryJobStore, name: str) -> None:
    with pytest.raises(InvalidToken, match="a token name is 1 to 64 letters"):
        create_token(store, name, "audit:read", "", None, now=1.0)
    assert store.api_tokens() == [] and store.events_after(0, limit=5) == []


def test_good_names() -> None:
    store = MemoryJobStore(AuditChain(node="n1"))
    for name in ("a", "mam-prod", "QC_2.v1", "x" * 64, "9"):
        create_token(store, name, "audit:read", "", None, now=1.0)
    assert len(store.api_tokens()) == 5


@pytest.mark.parametrize("scope", sorted(ROUTE_SCOPES))
def test_a_route_scope_needs_explicit_routes(store: MemoryJobStore, scope: Scope) -> None:
    with pytest.raises(InvalidToken, match=f"scope {scope} acts on routes.*--routes '\\*'"):
        create_token(store, "t", ["audit:read", scope], "", None, now=1.0)
    assert store.api_tokens() == []


def test_an_expiry_in_the_past_is_refused(store: MemoryJobStore) -> None:
    with pytest.raises(InvalidToken, match="the expiry must be in the future"):
        create_token(store, "t", "audit:read", "", 10.0, now=10.0)


def test_a_taken_name_and_an_unknown_revoke(store: MemoryJobStore) -> None:
    create_token(store, "t", "audit:read", "", None, now=1.0)
    with pytest.raises(TokenNameTaken):
        create_token(store, "t", "audit:read", "", None, now=2.0)
    with pytest.raises(NoSuchToken, match="no token named 'u'"):
        revoke_token(store, "u", now=3.0)
    info = revoke_token(store, "t", now=3.0, actor=Principal("os-user", "ops"))
    assert (info.revoked_at, info.revoked_by, info.state(4.0)) == (3.0, "ops", "revoked")
    with pytest.raises(NoSuchToken):
        revoke_token(store, "t", now=4.0)


def test_token_states() -> None:
    store = MemoryJobStore(AuditChain(node="n1"))
    create_token(store, "a", "audit:read", "", 100.0, now=1.0)
    create_token(store, "b", "audit:read", "", None, now=1.0)
    assert [(t.name, t.state(50.0), t.state(100.0)) for t in list_tokens(store)] == [
        ("a", "live", "expired"),
        ("b", "live", "live"),
    ]


# -- the Authorization header -----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer", ""),
        ("Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),  # not a bearer token: malformed
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
