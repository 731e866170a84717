"""Scopes and route globs: the closed set, parsed with errors that say what
is wrong and what is right."""

from __future__ import annotations

import pytest

from ketter.access.routes import InvalidRouteGlob, matches, parse_route_globs
from ketter.access.scopes import SCOPES, Scope, UnknownScope, parse_scopes


def test_the_closed_set() -> None:
    assert [str(s) for s in SCOPES] == [
        "transfers:read",
        "transfers:write",
        "transfers:requeue",
        "transfers:cancel",
        "routes:pause",
        "audit:read",
        "metrics:read",
    ]


def test_parse_scopes_orders_and_dedupes() -> None:
    assert parse_scopes("audit:read, transfers:read,audit:read,") == (
        Scope.TRANSFERS_READ,
        Scope.AUDIT_READ,
    )
    assert parse_scopes(["metrics:read"]) == (Scope.METRICS_READ,)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("transfers:read,transfer:write", "'transfer:write'"),
        ("TRANSFERS:READ", "'TRANSFERS:READ'"),  # case matters
        ("admin", "'admin'"),
        ("*", "'*'"),  # no wildcard scope
    ],
)
def test_an_unknown_scope_is_named_with_the_valid_ones(text: str, named: str) -> None:
    with pytest.raises(UnknownScope) as caught:
        parse_scopes(text)
    message = str(caught.value)
    assert f"unknown scope {named}" in message
    assert all(str(scope) in message for scope in SCOPES)


def test_no_scope_is_an_error() -> None:
    for empty in ("", " , ", []):
        with pytest.raises(UnknownScope, match="at least one scope; the scopes are: transfers"):
            parse_scopes(empty)
    with pytest.raises(UnknownScope, match="unknown scope ''"):
        parse_scopes([""])  # an empty name in a list is a name


def test_route_globs_parse() -> None:
    assert parse_route_globs("dub-*, qc-?,dub-*,") == ("dub-*", "qc-?")
    assert parse_route_globs("*") == ("*",)
    assert parse_route_globs("") == ()
    assert parse_route_globs(["[ab]-x", "r1"]) == ("[ab]-x", "r1")


@pytest.mark.parametrize("bad", ["dub/*", "dub;rm", "a b ", " x", "a\nb", "$(x)", "x" * 201, "`x`"])
def test_bad_route_globs_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRouteGlob, match="a route glob is"):
        parse_route_globs([bad])


@pytest.mark.parametrize(
    ("route", "globs", "expected"),
    [
        ("dub-fr", ("dub-*",), True),
        ("dub-", ("dub-*",), True),
        ("dubbing", ("dub-*",), False),
        ("DUB-fr", ("dub-*",), False),  # case-sensitive on every platform
        ("qc-1", ("dub-*", "qc-?"), True),
        ("qc-10", ("dub-*", "qc-?"), False),
        ("anything", ("*",), True),
        ("r1", ("r1",), True),
        ("r10", ("r1",), False),  # a plain name is the whole name
        ("a-x", ("[ab]-x",), True),
        ("c-x", ("[!ab]-x",), True),
        ("a-x", ("[!ab]-x",), False),
        ("r1", (), False),  # no glob: no route
    ],
)
def test_globs_match_whole_names(route: str, globs: tuple[str, ...], expected: bool) -> None:
    assert matches(route, globs) is expected
