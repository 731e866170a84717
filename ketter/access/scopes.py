"""The closed set of API scopes: what a token may do. Nothing implies
anything else (``transfers:write`` does not give ``transfers:read``): a
token holds exactly the scopes it was made with."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from ketter.errors import KetterError


class Scope(enum.StrEnum):
    """One permission of an API token."""

    #: List and read transfers (their events and manifests), on its routes.
    TRANSFERS_READ = "transfers:read"
    #: Submit a path on one of its routes.
    TRANSFERS_WRITE = "transfers:write"
    #: Re-queue a failed transfer of one of its routes.
    TRANSFERS_REQUEUE = "transfers:requeue"
    #: Cancel a transfer of one of its routes before placement.
    TRANSFERS_CANCEL = "transfers:cancel"
    #: Pause and resume its routes.
    ROUTES_PAUSE = "routes:pause"
    #: Read the audit events (a SIEM's pull).
    AUDIT_READ = "audit:read"
    #: Scrape ``/metrics``.
    METRICS_READ = "metrics:read"


#: Every scope, in the order above (how they are listed and stored).
SCOPES: tuple[Scope, ...] = tuple(Scope)

#: Scopes whose actions are on one route: a token holding one of them acts
#: only on the routes its globs match, and is made with explicit ``--routes``.
ROUTE_SCOPES: frozenset[Scope] = frozenset(
    {
        Scope.TRANSFERS_READ,
        Scope.TRANSFERS_WRITE,
        Scope.TRANSFERS_REQUEUE,
        Scope.TRANSFERS_CANCEL,
        Scope.ROUTES_PAUSE,
    }
)


class UnknownScope(KetterError, ValueError):
    """Not an API scope."""


def valid_scopes() -> str:
    """The valid scopes as one line, for messages and help texts."""
    return ", ".join(SCOPES)


def parse_scopes(value: str | Iterable[str]) -> tuple[Scope, ...]:
    """The scopes of ``transfers:read,audit:read`` (or of a list of names),
    without duplicates, in :data:`SCOPES` order. Raises
    :class:`UnknownScope` naming the first unknown scope and listing the
    valid ones, or when none is given."""
    names = value.split(",") if isinstance(value, str) else list(value)
    found: set[Scope] = set()
    for raw in names:
        name = raw.strip()
        if not name and isinstance(value, str):
            continue  # "a,,b" or a trailing comma
        try:
            found.add(Scope(name))
        except ValueError:
            raise UnknownScope(
                f"unknown scope {name!r}; the scopes are: {valid_scopes()}"
            ) from None
    if not found:
        raise UnknownScope(f"give at least one scope; the scopes are: {valid_scopes()}")
    return tuple(s for s in SCOPES if s in found)
