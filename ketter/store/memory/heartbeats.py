"""In-memory job store: heartbeats (see :class:`ketter.store.ports.heartbeats.HeartbeatsPort`)."""

from __future__ import annotations

import dataclasses

from ketter.store.composite.heartbeats import CompositeHeartbeats
from ketter.store.memory.core import MemoryCore
from ketter.store.rows import HeartbeatRow


class HeartbeatsMemory(MemoryCore, CompositeHeartbeats):
    """The heartbeats rows in memory."""

    def _put_heartbeat(self, component: str, node: str, *, pid: int, now: float, text: str) -> None:
        with self._write():
            old = self.tables.heartbeats.get((component, node))
            row_id = old.id if old is not None else self.tables.next_id("heartbeats")
            self.tables.heartbeats[(component, node)] = HeartbeatRow(
                id=row_id, component=component, node=node, pid=pid, ts=now, details=text
            )

    def get_heartbeat(self, component: str, node: str) -> HeartbeatRow | None:
        row = self.tables.heartbeats.get((component, node))
        return dataclasses.replace(row) if row is not None else None

    def list_heartbeats(self, node: str | None = None) -> list[HeartbeatRow]:
        return [
            dataclasses.replace(row)
            for _key, row in sorted(self.tables.heartbeats.items())
            if node is None or row.node == node
        ]
