"""The API-token area's composite operations, written once: a token created
and revoked with its audit event in one transaction, over the backend's row
primitives. The event carries the token's name, scopes, routes and expiry,
never its secret nor the secret's hash (the chain and the JSONL log are
read by more people than may hold a token)."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

from ketter.audit.chain import Principal
from ketter.store.composite.core import CompositeCore
from ketter.store.ports.tokens import TokenNameTaken
from ketter.store.rows import ApiTokenRow


class CompositeTokens(CompositeCore):
    """Token creation and revocation (see :class:`ketter.store.ports.tokens.TokensPort`)."""

    @abc.abstractmethod
    def _live_api_token(self, name: str) -> ApiTokenRow | None:
        """The token named ``name`` that is not revoked, if any."""

    @abc.abstractmethod
    def _insert_api_token(self, row: ApiTokenRow) -> int:
        """Insert ``row`` (its ``id`` ignored); the new id."""

    @abc.abstractmethod
    def _mark_api_token_revoked(self, token_id: int, *, now: float, by: str) -> None:
        """Set the token's ``revoked_at`` and ``revoked_by``."""

    def create_api_token(
        self,
        name: str,
        secret_sha256: str,
        scopes: Sequence[str],
        routes: Sequence[str],
        *,
        expires_at: float | None,
        now: float,
        actor: Principal | None = None,
        by: str | None = None,
    ) -> ApiTokenRow:
        who = (actor or self.chain.actor).as_user()
        with self.transaction():
            if self._live_api_token(name) is not None:
                raise TokenNameTaken(
                    f"a token named {name!r} exists and is not revoked: revoke it first "
                    f"(ketter token revoke {name}) or choose another name"
                )
            row = ApiTokenRow(
                id=0,
                name=name,
                secret_sha256=secret_sha256,
                scopes=tuple(scopes),
                routes=tuple(routes),
                created_at=now,
                created_by=who,
                expires_at=expires_at,
            )
            row.id = self._insert_api_token(row)
            self.append_event("token_created", now=now, details=_details(row, by), actor=actor)
        return row

    def revoke_api_token(
        self, name: str, *, now: float, actor: Principal | None = None, by: str | None = None
    ) -> ApiTokenRow | None:
        who = (actor or self.chain.actor).as_user()
        with self.transaction():
            row = self._live_api_token(name)
            if row is None:
                return None
            self._mark_api_token_revoked(row.id, now=now, by=who)
            revoked = dataclasses.replace(row, revoked_at=now, revoked_by=who)
            self.append_event("token_revoked", now=now, details=_details(revoked, by), actor=actor)
        return revoked


def _details(row: ApiTokenRow, by: str | None) -> dict[str, Any]:
    """What the audit event says of a token: never its secret or its hash."""
    details: dict[str, Any] = {
        "token": row.name,
        "scopes": list(row.scopes),
        "routes": list(row.routes),
        "expires_at": row.expires_at,
    }
    if by is not None:
        details["by"] = by
    return details
