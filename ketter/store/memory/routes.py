"""In-memory job store: routes (see :class:`ketter.store.ports.routes.RoutesPort`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ketter.store.memory.core import MemoryCore
from ketter.store.rows import RouteStatusRow


class RoutesMemory(MemoryCore):
    """The routes operations in memory."""

    def route_status(self, route: str) -> RouteStatusRow | None:
        row = self.tables.route_status.get(route)
        return dataclasses.replace(row) if row is not None else None

    def paused_route_statuses(self) -> list[RouteStatusRow]:
        return [dataclasses.replace(r) for r in self.tables.route_status.values() if r.paused == 1]

    def room_pauses_before(self, route: str) -> int:
        status = self.tables.route_status.get(route)
        if status is None or not status.room_pauses:
            return 0
        since = status.room_paused_at
        if since is not None and any(
            job.route == route
            and job.state == "completed"
            and job.completed_at is not None
            and job.completed_at >= since
            for job in self.tables.jobs.values()
        ):
            return 0
        return int(status.room_pauses)

    def pause_route(
        self,
        route: str,
        reason: str,
        *,
        now: float,
        room_needed: int | None = None,
        room_pauses: int | None = None,
        resume_at: float | None = None,
    ) -> bool:
        with self._write():
            status = self.tables.route_status.get(route)
            if status is not None and status.paused:
                return False
            pauses = (status.room_pauses or 0) if status is not None else 0
            paused_at = status.room_paused_at if status is not None else None
            if room_needed is not None:
                pauses = (
                    room_pauses if room_pauses is not None else self.room_pauses_before(route) + 1
                )
                paused_at = now
            self.tables.route_status[route] = RouteStatusRow(
                route=route,
                paused=1,
                reason=reason,
                since=now,
                updated_at=now,
                room_needed=room_needed,
                room_pauses=pauses,
                room_paused_at=paused_at,
                resume_at=resume_at,
            )
            details: dict[str, Any] = {"reason": reason}
            if room_needed is not None:
                details["room_needed"] = room_needed
                details["room_pauses"] = pauses
            if resume_at is not None:
                details["resume_at"] = resume_at
            self.append_event("route_paused", now=now, route=route, details=details)
        return True

    def resume_route(self, route: str, *, now: float) -> bool:
        with self._write():
            status = self.tables.route_status.get(route)
            if status is None or not status.paused:
                return False
            outage = now - (status.since or now)
            reason_was = status.reason
            self.tables.route_status[route] = dataclasses.replace(
                status,
                paused=0,
                reason=None,
                since=None,
                updated_at=now,
                room_needed=None,
                resume_at=None,
            )
            self.append_event(
                "route_resumed",
                now=now,
                route=route,
                details={"paused_for_s": round(outage, 3), "reason_was": reason_was},
            )
        return True
