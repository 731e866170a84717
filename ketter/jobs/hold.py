"""An operator's hold of a route (``ketter pause ROUTE --reason``, ``ketter
resume ROUTE``; ``POST /api/v1/routes/{name}/pause`` and ``/resume``).

A held route takes no new claims — the same gate as an outage pause
(:meth:`ketter.store.ports.leases.LeasesPort.paused_route_names`): the
claims, the batches and the sweep's doorbells all leave it be. Jobs already
running when it is held finish their attempt (a hold is a stop of new work,
not an abort: cancel a job for that). The watcher keeps detecting and
enqueueing, so nothing is lost: the new jobs wait ``detected`` until the
route is released.

The hold is kept apart from the outage and room pauses (its own columns in
``route_status``, kept across restarts): the sweep resumes a pause once the
share is back, but nothing automatic lifts a hold; a pause and its resume
leave it as it is. ``ketter health`` shows it without calling the node
unhealthy: it is on purpose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ketter.audit.chain import Principal
    from ketter.config import Config
    from ketter.store.port import JobStore


class UnknownRoute(KeyError):
    """A route name that is not in the configuration."""

    def __init__(self, name: str, config: Config) -> None:
        known = ", ".join(r.name for r in config.routes) or "none"
        super().__init__(f"no route named {name!r} in {config.path} (routes: {known})")

    def __str__(self) -> str:
        return str(self.args[0])


def check_route(config: Config, name: str) -> None:
    """Raise :class:`UnknownRoute` (naming the configured routes) unless
    ``name`` is a route of ``config``."""
    if name not in {r.name for r in config.routes}:
        raise UnknownRoute(name, config)


def hold_route(store: JobStore, route: str, *, reason: str, now: float, actor: Principal) -> bool:
    """Hold ``route`` with ``reason`` for ``actor``; ``False`` when it is
    held already (the first hold's reason, who and since are kept)."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a hold needs a reason (who asked, why, until when)")
    return store.hold_route(route, reason=reason, now=now, actor=actor)


def release_route(store: JobStore, route: str, *, now: float, actor: Principal) -> bool:
    """Release ``route``'s hold for ``actor``; ``False`` when it is not held.
    The sweep rings for its waiting jobs at its next round."""
    return store.release_route(route, now=now, actor=actor)
