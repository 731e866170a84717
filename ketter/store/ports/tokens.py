"""The job store's API-token operations: a token created and revoked, each
with its audit event in one transaction; looked up by the SHA-256 of its
secret (the secret itself is never stored); its last use stamped at most
once a minute."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ketter.audit.chain import Principal
from ketter.errors import KetterError
from ketter.store.rows import ApiTokenRow


class TokenNameTaken(KetterError):
    """A token that is not revoked already has this name: revoke it first
    (`ketter token revoke NAME`) or choose another name."""


#: ``last_used_at`` is written at most this often per token (seconds): an
#: API answering many requests must not write the store for each.
LAST_USED_EVERY = 60.0


class TokensPort(Protocol):
    """The API-token operations of the job store."""

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
        """Insert a token with its ``token_created`` event (name, scopes,
        routes, expiry, and ``by``: the person behind the account, e.g.
        ``sudo``'s user, when given; never the hash), in one transaction. Raises
        :class:`TokenNameTaken` (nothing written) when a token not revoked
        has ``name``."""
        ...

    def revoke_api_token(
        self, name: str, *, now: float, actor: Principal | None = None, by: str | None = None
    ) -> ApiTokenRow | None:
        """Revoke the token named ``name`` that is not revoked yet, with its
        ``token_revoked`` event, in one transaction; the revoked row, or
        ``None`` (nothing written) when there is none."""
        ...

    def api_token_by_hash(self, secret_sha256: str) -> ApiTokenRow | None:
        """The token whose secret has this SHA-256 (revoked or not)."""
        ...

    def api_tokens(self) -> list[ApiTokenRow]:
        """Every token, revoked ones included, oldest first."""
        ...

    def touch_api_token(self, token_id: int, *, now: float) -> bool:
        """Stamp ``last_used_at`` unless it was stamped less than
        :data:`LAST_USED_EVERY` ago; whether it wrote."""
        ...
