"""The SQL job store: heartbeats (see :class:`ketter.store.ports.heartbeats.HeartbeatsPort`)."""

from __future__ import annotations

from ketter.store.composite.heartbeats import CompositeHeartbeats
from ketter.store.models import Heartbeat
from ketter.store.rows import HeartbeatRow
from ketter.store.sql.core import SqlCore


class HeartbeatsShared(SqlCore, CompositeHeartbeats):
    """The heartbeats rows on SQL."""

    def _put_heartbeat(self, component: str, node: str, *, pid: int, now: float, text: str) -> None:
        (
            Heartbeat.insert(component=component, node=node, pid=pid, ts=now, details=text)
            .on_conflict(
                conflict_target=[Heartbeat.component, Heartbeat.node],
                preserve=[Heartbeat.pid, Heartbeat.ts, Heartbeat.details],
            )
            .execute(self.db)
        )

    def get_heartbeat(self, component: str, node: str) -> HeartbeatRow | None:
        row = (
            Heartbeat.select()
            .where((Heartbeat.component == component) & (Heartbeat.node == node))
            .dicts()
            .first(self.db)
        )
        return HeartbeatRow(**row) if row is not None else None

    def list_heartbeats(self, node: str | None = None) -> list[HeartbeatRow]:
        query = Heartbeat.select()
        if node is not None:
            query = query.where(Heartbeat.node == node)
        return [
            HeartbeatRow(**row)
            for row in query.order_by(Heartbeat.component, Heartbeat.node).dicts().execute(self.db)
        ]
