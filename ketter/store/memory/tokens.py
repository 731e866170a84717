"""In-memory job store: API tokens (see :class:`ketter.store.ports.tokens.TokensPort`);
creation and revocation with their events are
:mod:`ketter.store.composite.tokens`, over the rows here."""

from __future__ import annotations

import dataclasses

from ketter.store.composite.tokens import CompositeTokens
from ketter.store.memory.core import MemoryCore
from ketter.store.ports.tokens import LAST_USED_EVERY
from ketter.store.rows import ApiTokenRow


class TokensMemory(MemoryCore, CompositeTokens):
    """The API-token rows in memory."""

    def api_token_by_hash(self, secret_sha256: str) -> ApiTokenRow | None:
        with self._lock:
            for row in self.tables.api_tokens.values():
                if row.secret_sha256 == secret_sha256:
                    return dataclasses.replace(row)
        return None

    def api_tokens(self) -> list[ApiTokenRow]:
        with self._lock:
            return [dataclasses.replace(r) for _, r in sorted(self.tables.api_tokens.items())]

    def touch_api_token(self, token_id: int, *, now: float) -> bool:
        with self._write():
            row = self.tables.api_tokens.get(token_id)
            if row is None:
                return False
            if row.last_used_at is not None and row.last_used_at > now - LAST_USED_EVERY:
                return False
            row.last_used_at = now
            return True

    def _live_api_token(self, name: str) -> ApiTokenRow | None:
        with self._lock:
            for row in self.tables.api_tokens.values():
                if row.name == name and row.revoked_at is None:
                    return dataclasses.replace(row)
        return None

    def _insert_api_token(self, row: ApiTokenRow) -> int:
        with self._write():
            if any(r.secret_sha256 == row.secret_sha256 for r in self.tables.api_tokens.values()):
                # The unique index of the SQLite table.
                raise ValueError("an API token with this secret's hash exists")
            token_id = self.tables.next_id("api_tokens")
            self.tables.api_tokens[token_id] = dataclasses.replace(row, id=token_id)
            return token_id

    def _mark_api_token_revoked(self, token_id: int, *, now: float, by: str) -> None:
        with self._write():
            row = self.tables.api_tokens[token_id]
            row.revoked_at = now
            row.revoked_by = by
