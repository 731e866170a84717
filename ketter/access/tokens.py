"""API tokens for machines: made, listed and revoked (``ketter token``).

A token's secret is ``ketter_`` followed by 43 characters of
:func:`secrets.token_urlsafe` (256 random bits): the prefix makes a leaked
token findable by a secret scanner or ``grep -r ketter_``. The secret is
returned once by :func:`create_token`; the job store keeps its SHA-256
only (a fast hash is enough for 256 random bits: there is nothing to guess),
so neither the store, the audit chain nor ``token list`` can show it again.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketter.access.routes import parse_route_globs
from ketter.access.scopes import ROUTE_SCOPES, Scope, parse_scopes
from ketter.audit.chain import Principal
from ketter.errors import KetterError
from ketter.store.ports.tokens import TokenNameTaken
from ketter.store.rows import ApiTokenRow

if TYPE_CHECKING:
    from ketter.store.port import JobStore

#: What every secret starts with (greppable when leaked).
TOKEN_PREFIX = "ketter_"
#: The whole secret: the prefix and 43 URL-safe base64 characters.
SECRET_RE = re.compile(r"ketter_[A-Za-z0-9_-]{43}")
#: A token's name: typed on command lines and shown as ``token:NAME`` in
#: the audit chain, so letters, digits and ``. _ -``, 1 to 64 of them.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = (
    "a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
)

__all__ = [
    "TOKEN_PREFIX",
    "InvalidToken",
    "NoSuchToken",
    "TokenInfo",
    "TokenNameTaken",
    "create_token",
    "list_tokens",
    "revoke_token",
    "secret_sha256",
]


class InvalidToken(KetterError, ValueError):
    """The token cannot be made as asked (its name, scopes, routes or expiry)."""


class NoSuchToken(KetterError):
    """No token that is not revoked has this name (see `ketter token list`)."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as ``ketter token list`` shows it: never its secret or hash."""

    name: str
    scopes: tuple[str, ...]
    routes: tuple[str, ...]
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    revoked_by: str | None
    last_used_at: float | None

    @classmethod
    def from_row(cls, row: ApiTokenRow) -> TokenInfo:
        return cls(
            name=row.name,
            scopes=row.scopes,
            routes=row.routes,
            created_at=row.created_at,
            created_by=row.created_by,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            revoked_by=row.revoked_by,
            last_used_at=row.last_used_at,
        )

    def state(self, now: float) -> str:
        """``revoked``, ``expired`` or ``live`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "live"


def secret_sha256(secret: str) -> str:
    """The SHA-256 (hex) of a token's secret: what the job store keeps."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid token name, None when it is."""
    if NAME_RE.fullmatch(name) is None:
        return f"{NAME_RULE}; got {name!r}"
    return None


def create_token(
    store: JobStore,
    name: str,
    scopes: str | Iterable[str],
    routes: str | Iterable[str],
    expires_at: float | None,
    *,
    now: float,
    actor: Principal | None = None,
    by: str | None = None,
) -> str:
    """Make a token and return its secret: the only time it is seen.

    ``scopes`` and ``routes`` as text (``a,b``) or lists. A token with a
    route scope (``transfers:*``, ``routes:pause``) needs at least one route
    glob: an empty list would make a token that can do nothing, so it is
    refused rather than made (``*`` says every route, on purpose).
    ``expires_at`` (None: never) must be after ``now``. Writes the token
    and its ``token_created`` event in one transaction (``actor``: its
    ``user``, default the chain's; ``by``: the person behind the account,
    ``sudo``'s user, in its details). Raises
    :class:`InvalidToken` (or :class:`~ketter.access.scopes.UnknownScope`,
    :class:`~ketter.access.routes.InvalidRouteGlob`, both ``ValueError``s)
    and :class:`TokenNameTaken`."""
    problem = name_problem(name)
    if problem is not None:
        raise InvalidToken(problem)
    granted = parse_scopes(scopes)
    globs = parse_route_globs(routes)
    route_scoped = [s for s in granted if s in ROUTE_SCOPES]
    if route_scoped and not globs:
        raise InvalidToken(
            f"scope {route_scoped[0]} acts on routes: give the routes this token may use "
            "(--routes 'dub-*,qc'; --routes '*' for every route)"
        )
    if expires_at is not None and expires_at <= now:
        raise InvalidToken("the expiry must be in the future")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.create_api_token(
        name,
        secret_sha256(secret),
        [str(s) for s in granted],
        list(globs),
        expires_at=expires_at,
        now=now,
        actor=actor,
        by=by,
    )
    return secret


def revoke_token(
    store: JobStore,
    name: str,
    *,
    now: float,
    actor: Principal | None = None,
    by: str | None = None,
) -> TokenInfo:
    """Revoke the live token named ``name`` (it answers 401 from now on),
    with its ``token_revoked`` event. Raises :class:`NoSuchToken`."""
    row = store.revoke_api_token(name, now=now, actor=actor, by=by)
    if row is not None and not store.in_transaction():
        store.sync()  # a revocation lost with a power cut would let the token in again
    if row is None:
        raise NoSuchToken(
            f"no token named {name!r} that is not revoked already (see ketter token list)"
        )
    return TokenInfo.from_row(row)


def list_tokens(store: JobStore) -> list[TokenInfo]:
    """Every token, revoked ones included, oldest first."""
    return [TokenInfo.from_row(row) for row in store.api_tokens()]


def scopes_of(row: ApiTokenRow) -> frozenset[Scope]:
    """The scopes a stored token holds; a name no longer a scope is dropped
    (a scope removed in a later version gives nothing)."""
    known = {scope.value for scope in Scope}
    return frozenset(Scope(s) for s in row.scopes if s in known)
