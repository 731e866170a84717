"""THE authorization decision of the HTTP API: who a request is
(:func:`authenticate`) and what it may do (:meth:`Grant.permits`,
:meth:`Grant.visible`). The API's one dependency calls these and nothing
else decides; sign-in for people and roles per route will produce a
:class:`Grant` too.

Deny by default: a scope the grant does not hold, a route its globs do not
match, a token expired or revoked: no. A route scope with no route
(``permits(scope)``) is a question about the action alone (may this token
list transfers at all?); the list it returns is then filtered with
:meth:`Grant.visible`, or better, :meth:`Grant.visible_routes` handed to
the store's filter so that pages have no holes.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ketter.access.routes import matches
from ketter.access.scopes import SCOPES, Scope
from ketter.access.tokens import SECRET_RE, scopes_of, secret_sha256
from ketter.audit.chain import Principal
from ketter.errors import KetterError
from ketter.store.ports.tokens import LAST_USED_EVERY

if TYPE_CHECKING:
    from ketter.store.rows import ApiTokenRow

#: The reasons of :class:`Unauthenticated` (for the audit event; the HTTP
#: answer is the same 401 for all of them, so a caller learns nothing).
REASONS = ("missing", "malformed", "unknown", "expired", "revoked")


class Unauthenticated(KetterError):
    """The request carries no valid API token."""

    def __init__(self, reason: str, token: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; one of {', '.join(REASONS)}")
        #: ``missing``, ``malformed``, ``unknown``, ``expired`` or ``revoked``.
        self.reason = reason
        #: The token's name when it is known (expired, revoked), for the audit.
        self.token = token
        super().__init__(f"not authenticated: {reason} token" + (f" {token!r}" if token else ""))


@dataclass(frozen=True)
class Grant:
    """What an authenticated caller may do: its scopes, on the routes its
    globs match."""

    #: The token's name (the ``user.name`` of its events: ``token:NAME``).
    token: str
    scopes: frozenset[Scope]
    #: Route globs (fnmatch); none: no route.
    routes: tuple[str, ...]
    expires_at: float | None = None

    @property
    def principal(self) -> Principal:
        """The actor of the events written for this caller."""
        return Principal("token", self.token)

    def permits(self, scope: str, route: str | None = None) -> bool:
        """Whether the caller may do ``scope``'s action, on ``route`` when
        the action is on one (``None``: not on a particular route). Raises
        ``ValueError`` for a name that is not a scope (a typo in the caller
        must not read as "denied" and hide)."""
        wanted = Scope(scope)  # ValueError for an unknown name
        if wanted not in self.scopes:
            return False
        return route is None or self.visible(route)

    def visible(self, route: str) -> bool:
        """Whether ``route`` is one of the caller's (lists show only those)."""
        return matches(route, self.routes)

    def visible_routes(self, names: Iterable[str]) -> tuple[str, ...]:
        """The routes of ``names`` (the config's) the caller may see."""
        return tuple(name for name in names if self.visible(name))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value (the
    scheme case-insensitive, RFC 7235); ``None`` when there is none. Any
    other text is returned whole, so :func:`authenticate` calls it
    malformed."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return authorization
    return rest.strip()


class TokenLookup(Protocol):
    """What :func:`authenticate` needs of a store (the job store has it; the
    API reads through its per-request read connection and writes the
    last-use stamp through the job store, :mod:`ketter.api.guard`)."""

    def api_token_by_hash(self, secret_sha256: str) -> ApiTokenRow | None: ...

    def touch_api_token(self, token_id: int, *, now: float) -> bool: ...


def authenticate(store: TokenLookup, presented: str | None, *, now: float) -> Grant:
    """The grant of the token ``presented`` (the secret itself, without
    ``Bearer``), or :class:`Unauthenticated` with the reason.

    The store is searched by the secret's SHA-256 (an index lookup, which
    tells nothing of how much of a guess was right), and the found hash is
    compared again in constant time. A token's last use is stamped at most
    once a minute (:meth:`~ketter.store.ports.tokens.TokensPort.touch_api_token`)."""
    if presented is None or presented == "":
        raise Unauthenticated("missing")
    if SECRET_RE.fullmatch(presented) is None:
        raise Unauthenticated("malformed")
    digest = secret_sha256(presented)
    row = store.api_token_by_hash(digest)
    if row is None or not hmac.compare_digest(row.secret_sha256, digest):
        raise Unauthenticated("unknown")
    if row.revoked_at is not None:
        raise Unauthenticated("revoked", row.name)
    if row.expires_at is not None and now >= row.expires_at:
        raise Unauthenticated("expired", row.name)
    if row.last_used_at is None or row.last_used_at <= now - LAST_USED_EVERY:
        # A write: only when the stamp is due, not on every request.
        store.touch_api_token(row.id, now=now)
    return Grant(
        token=row.name, scopes=scopes_of(row), routes=tuple(row.routes), expires_at=row.expires_at
    )


__all__ = ["REASONS", "SCOPES", "Grant", "Unauthenticated", "authenticate", "bearer_token"]
