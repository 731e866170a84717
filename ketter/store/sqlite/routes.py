"""SQLite job store: routes (see :class:`ketter.store.ports.routes.RoutesPort`)."""

from __future__ import annotations

from typing import Any

from ketter.store.models import Job, RouteStatus
from ketter.store.rows import RouteStatusRow
from ketter.store.sqlite.core import SqliteCore


class RoutesSql(SqliteCore):
    """The routes operations on SQLite."""

    def route_status(self, route: str) -> RouteStatusRow | None:
        row = RouteStatus.select().where(RouteStatus.route == route).dicts().first(self.db)
        return RouteStatusRow(**row) if row is not None else None

    def paused_route_statuses(self) -> list[RouteStatusRow]:
        query = RouteStatus.select().where(RouteStatus.paused == 1).dicts()
        return [RouteStatusRow(**row) for row in query.execute(self.db)]

    def room_pauses_before(self, route: str) -> int:
        status = self.route_status(route)
        if status is None or not status.room_pauses:
            return 0
        if status.room_paused_at is not None and (
            Job.select()
            .where(
                (Job.route == route)
                & (Job.state == "completed")
                & (Job.completed_at >= status.room_paused_at)
            )
            .exists(self.db)
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
        with self.db.atomic():
            status = self.route_status(route)
            if status is not None and status.paused:
                return False
            # The episode's count survives a resume and a pause for another
            # reason (a share unmounted meanwhile delivered nothing either).
            pauses = (status.room_pauses or 0) if status is not None else 0
            paused_at = status.room_paused_at if status is not None else None
            if room_needed is not None:
                pauses = (
                    room_pauses if room_pauses is not None else self.room_pauses_before(route) + 1
                )
                paused_at = now
            (
                RouteStatus.insert(
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
                .on_conflict_replace()
                .execute(self.db)
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
        with self.db.atomic():
            status = self.route_status(route)
            if status is None or not status.paused:
                return False
            outage = now - (status.since or now)
            (
                RouteStatus.update(
                    paused=0,
                    reason=None,
                    since=None,
                    updated_at=now,
                    room_needed=None,
                    resume_at=None,
                )
                .where(RouteStatus.route == route)
                .execute(self.db)
            )
            self.append_event(
                "route_resumed",
                now=now,
                route=route,
                details={"paused_for_s": round(outage, 3), "reason_was": status.reason},
            )
        return True
