"""The SQL job store: routes (see :class:`ketter.store.ports.routes.RoutesPort`);
the pauses and resumes with their events are
:mod:`ketter.store.composite.routes`, over the rows here."""

from __future__ import annotations

import dataclasses

from ketter.store.composite.routes import CompositeRoutes
from ketter.store.models import Job, RouteStatus, ShareMarker
from ketter.store.rows import RouteStatusRow
from ketter.store.sql.core import SqlCore


class RoutesShared(SqlCore, CompositeRoutes):
    """The routes rows on SQL."""

    def route_status(self, route: str) -> RouteStatusRow | None:
        row = RouteStatus.select().where(RouteStatus.route == route).dicts().first(self.db)
        return RouteStatusRow(**row) if row is not None else None

    def paused_route_statuses(self) -> list[RouteStatusRow]:
        query = RouteStatus.select().where(RouteStatus.paused == 1).dicts()
        return [RouteStatusRow(**row) for row in query.execute(self.db)]

    def held_route_statuses(self) -> list[RouteStatusRow]:
        query = RouteStatus.select().where(RouteStatus.held == 1).dicts()
        return [RouteStatusRow(**row) for row in query.execute(self.db)]

    def _completed_since(self, route: str, since: float) -> bool:
        return bool(
            Job.select()
            .where((Job.route == route) & (Job.state == "completed") & (Job.completed_at >= since))
            .exists(self.db)
        )

    def _put_route_status(self, row: RouteStatusRow) -> None:
        # An upsert of the whole row (both backends; SQLite's REPLACE has no
        # PostgreSQL spelling).
        values = dataclasses.asdict(row)
        RouteStatus.insert(**values).on_conflict(
            conflict_target=[RouteStatus.route],
            update={getattr(RouteStatus, name): value for name, value in values.items()},
        ).execute(self.db)

    def share_marker(self, route: str, side: str) -> str | None:
        row = (
            ShareMarker.select(ShareMarker.marker)
            .where((ShareMarker.route == route) & (ShareMarker.side == side))
            .tuples()
            .first(self.db)
        )
        return str(row[0]) if row is not None else None

    def _put_share_marker(
        self, route: str, side: str, path: str, marker: str, node: str, now: float
    ) -> None:
        ShareMarker.insert(
            route=route, side=side, path=path, marker=marker, node=node, created_at=now
        ).execute(self.db)
