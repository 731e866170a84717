"""The SQL job store: API tokens (see :class:`ketter.store.ports.tokens.TokensPort`);
creation and revocation with their events are
:mod:`ketter.store.composite.tokens`, over the rows here. Scopes and route
globs are JSON arrays in TEXT columns (PostgreSQL: the same, or ``text[]``)."""

from __future__ import annotations

import json
from typing import Any

from peewee import OperationalError, ProgrammingError

from ketter.store.composite.tokens import CompositeTokens
from ketter.store.models import ApiToken
from ketter.store.port import StoreUnreadable
from ketter.store.ports.tokens import LAST_USED_EVERY
from ketter.store.rows import ApiTokenRow
from ketter.store.sql.core import SqlCore


class TokensShared(SqlCore, CompositeTokens):
    """The API-token rows on SQL."""

    def api_token_by_hash(self, secret_sha256: str) -> ApiTokenRow | None:
        query = ApiToken.select().where(ApiToken.secret_sha256 == secret_sha256)
        row = query.dicts().first(self.db)
        return _row(row) if row is not None else None

    def api_tokens(self) -> list[ApiTokenRow]:
        query = ApiToken.select().order_by(ApiToken.id).dicts()
        try:
            return [_row(row) for row in query.execute(self.db)]
        except (OperationalError, ProgrammingError) as exc:
            # SQLite's words, then PostgreSQL's (undefined_table).
            if "no such table" not in str(exc) and "does not exist" not in str(exc):
                raise
            # A read-only store (``ketter token list``) is not migrated.
            raise StoreUnreadable(
                f"the job store {self.path} has no API tokens table yet: "
                "run `ketter db upgrade` (Ketter was upgraded)"
            ) from exc

    def touch_api_token(self, token_id: int, *, now: float) -> bool:
        query = ApiToken.update(last_used_at=now).where(
            (ApiToken.id == token_id)
            & (ApiToken.last_used_at.is_null() | (ApiToken.last_used_at <= now - LAST_USED_EVERY))
        )
        return bool(query.execute(self.db))

    def _live_api_token(self, name: str) -> ApiTokenRow | None:
        row = (
            ApiToken.select()
            .where((ApiToken.name == name) & ApiToken.revoked_at.is_null())
            .dicts()
            .first(self.db)
        )
        return _row(row) if row is not None else None

    def _insert_api_token(self, row: ApiTokenRow) -> int:
        return int(
            ApiToken.insert(
                name=row.name,
                secret_sha256=row.secret_sha256,
                scopes=json.dumps(list(row.scopes)),
                routes=json.dumps(list(row.routes)),
                created_at=row.created_at,
                created_by=row.created_by,
                expires_at=row.expires_at,
            ).execute(self.db)
        )

    def _mark_api_token_revoked(self, token_id: int, *, now: float, by: str) -> None:
        ApiToken.update(revoked_at=now, revoked_by=by).where(ApiToken.id == token_id).execute(
            self.db
        )


def _row(row: dict[str, Any]) -> ApiTokenRow:
    return ApiTokenRow(
        **{
            **row,
            "scopes": tuple(json.loads(row["scopes"])),
            "routes": tuple(json.loads(row["routes"])),
        }
    )
