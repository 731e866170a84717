"""The routes area's composite operations, written once: a route paused
(with the room episode counted and stamped) and resumed, each with its
audit event in one transaction; over the backend's status row read and
upsert and one query (:meth:`_completed_since`)."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from ketter.audit.chain import Principal
from ketter.store.composite.core import CompositeCore
from ketter.store.rows import RouteStatusRow


class CompositeRoutes(CompositeCore):
    """Pauses and resumes (see :class:`ketter.store.ports.routes.RoutesPort`)."""

    @abc.abstractmethod
    def route_status(self, route: str) -> RouteStatusRow | None: ...

    @abc.abstractmethod
    def _completed_since(self, route: str, since: float) -> bool:
        """Whether a job of ``route`` completed at or after ``since``."""

    @abc.abstractmethod
    def _put_route_status(self, row: RouteStatusRow) -> None:
        """Insert ``row``, or replace the route's row with it."""

    def room_pauses_before(self, route: str) -> int:
        status = self.route_status(route)
        if status is None or not status.room_pauses:
            return 0
        if status.room_paused_at is not None and self._completed_since(
            route, status.room_paused_at
        ):
            return 0  # something was delivered since: the episode is over
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
        with self.transaction():
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
            # An operator's hold on the row is kept: a pause neither sets
            # nor lifts it.
            self._put_route_status(
                dataclasses.replace(
                    status or RouteStatusRow(route=route, updated_at=now),
                    paused=1,
                    reason=reason,
                    since=now,
                    updated_at=now,
                    room_needed=room_needed,
                    room_pauses=pauses,
                    room_paused_at=paused_at,
                    resume_at=resume_at,
                )
            )
            details: dict[str, Any] = {"reason": reason}
            if room_needed is not None:
                details["room_needed"] = room_needed
                details["room_pauses"] = pauses
            if resume_at is not None:
                details["resume_at"] = resume_at
            self.append_event("route_paused", now=now, route=route, details=details)
        return True

    @abc.abstractmethod
    def share_marker(self, route: str, side: str) -> str | None: ...

    @abc.abstractmethod
    def _put_share_marker(
        self, route: str, side: str, path: str, marker: str, node: str, now: float
    ) -> None:
        """Insert the marker row of ``route``'s ``side`` root."""

    def record_share_marker(
        self, route: str, side: str, *, path: str, marker: str, node: str, now: float
    ) -> str:
        # In one write transaction: on PostgreSQL every one takes the
        # store's write turn first, so two nodes starting together cannot
        # both record theirs; the second gets the first one's id.
        with self.transaction():
            found = self.share_marker(route, side)
            if found is not None:
                return found
            self._put_share_marker(route, side, path, marker, node, now)
        return marker

    def resume_route(self, route: str, *, now: float) -> bool:
        with self.transaction():
            status = self.route_status(route)
            if status is None or not status.paused:
                return False
            outage = now - (status.since or now)
            # The room episode's count and stamp are kept, and so is an
            # operator's hold: only release_route lifts it.
            self._put_route_status(
                dataclasses.replace(
                    status,
                    paused=0,
                    reason=None,
                    since=None,
                    updated_at=now,
                    room_needed=None,
                    resume_at=None,
                )
            )
            self.append_event(
                "route_resumed",
                now=now,
                route=route,
                details={"paused_for_s": round(outage, 3), "reason_was": status.reason},
            )
        return True

    def hold_route(
        self, route: str, *, reason: str, now: float, actor: Principal | None = None
    ) -> bool:
        with self.transaction():
            status = self.route_status(route)
            if status is not None and status.held:
                return False
            by = (actor or self.chain.actor).as_user()
            self._put_route_status(
                dataclasses.replace(
                    status or RouteStatusRow(route=route, updated_at=now),
                    held=1,
                    held_reason=reason,
                    held_by=by,
                    held_since=now,
                    updated_at=now,
                )
            )
            self.append_event(
                "route_held", now=now, route=route, details={"reason": reason}, actor=actor
            )
        return True

    def release_route(self, route: str, *, now: float, actor: Principal | None = None) -> bool:
        with self.transaction():
            status = self.route_status(route)
            if status is None or not status.held:
                return False
            held_for = now - (status.held_since or now)
            self._put_route_status(
                dataclasses.replace(
                    status,
                    held=0,
                    held_reason=None,
                    held_by=None,
                    held_since=None,
                    updated_at=now,
                )
            )
            self.append_event(
                "route_released",
                now=now,
                route=route,
                details={
                    "held_for_s": round(held_for, 3),
                    "reason_was": status.held_reason,
                    "held_by": status.held_by,
                },
                actor=actor,
            )
        return True
