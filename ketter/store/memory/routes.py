"""In-memory job store: routes (see :class:`ketter.store.ports.routes.RoutesPort`);
the pauses and resumes with their events are
:mod:`ketter.store.composite.routes`, over the rows here."""

from __future__ import annotations

import dataclasses

from ketter.store.composite.routes import CompositeRoutes
from ketter.store.memory.core import MemoryCore
from ketter.store.rows import RouteStatusRow


class RoutesMemory(MemoryCore, CompositeRoutes):
    """The routes rows in memory."""

    def route_status(self, route: str) -> RouteStatusRow | None:
        row = self.tables.route_status.get(route)
        return dataclasses.replace(row) if row is not None else None

    def paused_route_statuses(self) -> list[RouteStatusRow]:
        return [dataclasses.replace(r) for r in self.tables.route_status.values() if r.paused == 1]

    def held_route_statuses(self) -> list[RouteStatusRow]:
        return [dataclasses.replace(r) for r in self.tables.route_status.values() if r.held == 1]

    def _completed_since(self, route: str, since: float) -> bool:
        with self._lock:
            return any(
                job.route == route
                and job.state == "completed"
                and job.completed_at is not None
                and job.completed_at >= since
                for job in self.tables.jobs.values()
            )

    def _put_route_status(self, row: RouteStatusRow) -> None:
        with self._write():
            self.tables.route_status[row.route] = dataclasses.replace(row)

    def share_marker(self, route: str, side: str) -> str | None:
        with self._lock:
            return self.tables.share_markers.get((route, side))

    def _put_share_marker(
        self, route: str, side: str, path: str, marker: str, node: str, now: float
    ) -> None:
        with self._write():
            self.tables.share_markers[(route, side)] = marker
