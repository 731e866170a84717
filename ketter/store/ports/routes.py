"""The job store's routes operations: a route paused (share down, destination
full) and resumed, and held and released by an operator, each change written
with its audit event.

A route takes no new claims while it is paused *or* held
(:meth:`ketter.store.ports.leases.LeasesPort.paused_route_names`). The two
are kept apart: the sweep resumes a pause once the share is back, but only
:meth:`RoutesPort.release_route` lifts a hold."""

from __future__ import annotations

from typing import Protocol

from ketter.audit.chain import Principal
from ketter.store.rows import RouteStatusRow


class RoutesPort(Protocol):
    """The routes operations of the job store."""

    def route_status(self, route: str) -> RouteStatusRow | None:
        """The route's status row (``None``: never paused)."""
        ...

    def paused_route_statuses(self) -> list[RouteStatusRow]:
        """The status rows of the routes paused now (outage or room; not
        the holds)."""
        ...

    def held_route_statuses(self) -> list[RouteStatusRow]:
        """The status rows of the routes an operator holds now."""
        ...

    def room_pauses_before(self, route: str) -> int:
        """How many times ``route`` paused for room with nothing of it
        delivered since: 0 when none, or when a job of the route completed
        after the last one (the episode is over)."""
        ...

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
        """Pause ``route`` with its ``route_paused`` event, in one
        transaction; ``False`` (nothing written) when it is paused already.
        A pause for room (``room_needed``) counts ``room_pauses`` (default:
        :meth:`room_pauses_before` + 1) and stamps the episode; another
        pause keeps the episode's count."""
        ...

    def share_marker(self, route: str, side: str) -> str | None:
        """The marker id recorded for ``route``'s ``side`` root (``source``
        or ``destination``), or ``None`` before any node wrote one
        (:mod:`ketter.jobs.shares`)."""
        ...

    def record_share_marker(
        self, route: str, side: str, *, path: str, marker: str, node: str, now: float
    ) -> str:
        """Record ``marker`` as the id of ``route``'s ``side`` root unless one
        is recorded already, in one transaction; returns the id recorded
        (another node's, when it was first)."""
        ...

    def resume_route(self, route: str, *, now: float) -> bool:
        """Resume ``route`` with its ``route_resumed`` event, in one
        transaction; ``False`` (nothing written) when it is not paused. The
        room episode's count and stamp are kept."""
        ...

    def hold_route(
        self, route: str, *, reason: str, now: float, actor: Principal | None = None
    ) -> bool:
        """Hold ``route`` (no new claims until released) with ``reason``,
        who (``actor``, default the chain's) and since, and its
        ``route_held`` event, in one transaction; ``False`` (nothing
        written) when it is held already. A pause is left as it is."""
        ...

    def release_route(self, route: str, *, now: float, actor: Principal | None = None) -> bool:
        """Lift the hold of ``route`` with its ``route_released`` event, in
        one transaction; ``False`` (nothing written) when it is not held. A
        pause is left as it is."""
        ...
