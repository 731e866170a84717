"""What every job store offers: transactions, the store file's guard and the
audit chain's appends."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ketter.audit.chain import AuditChain, Principal
from ketter.store.guard import StoreGuard


class CorePort(Protocol):
    """Transactions, the store file and the audit chain."""

    chain: AuditChain

    @property
    def path(self) -> str: ...

    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        """All or nothing; nested, a savepoint. ``durable=True``: on the
        disk when the block is left (must not nest)."""
        ...

    def in_transaction(self) -> bool: ...

    def sync(self) -> None:
        """Make this thread's commits so far durable."""
        ...

    def release_thread(self) -> None:
        """Close this thread's connection (a thread that ends)."""
        ...

    def close(self) -> None: ...

    @property
    def guard(self) -> StoreGuard | None: ...

    def ensure_intact(self, what: str) -> None:
        """Raise ``StoreLost`` when the store file is no longer the one opened."""
        ...

    def append_event(
        self,
        event: str,
        *,
        now: float,
        job_id: int | None = None,
        route: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        attempt: int | None = None,
        details: dict[str, Any] | None = None,
        actor: Principal | None = None,
    ) -> int:
        """Append one event inside the caller's transaction; its sequence."""
        ...

    def append_events(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """:meth:`append_event` for each of ``events`` (its arguments, the
        event's name under ``"event"``), in order, inside the caller's
        transaction; their sequences. A backend may insert them in one
        statement."""
        ...
