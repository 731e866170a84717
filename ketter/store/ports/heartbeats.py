"""The job store's heartbeats operations: one row per (component, node),
replaced in place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ketter.store.rows import HeartbeatRow


class HeartbeatsPort(Protocol):
    """The heartbeats operations of the job store."""

    def beat(self, node: str, details: Mapping[str, str], *, pid: int, now: float) -> None:
        """Upsert one heartbeat row per ``component → details`` (JSON text)
        of ``node``, all in one transaction (or the caller's)."""
        ...

    def get_heartbeat(self, component: str, node: str) -> HeartbeatRow | None:
        """The heartbeat row of ``component`` on ``node``, if any."""
        ...

    def list_heartbeats(self, node: str | None = None) -> list[HeartbeatRow]:
        """Every heartbeat row (of ``node`` only when given), by component."""
        ...
