"""The heartbeats area's composite operation, written once: one row per
component of a node upserted, all in one transaction.

Each row is stamped by the store: its time on the leases' clock (the
database's on PostgreSQL, so the nodes' rows compare on one clock) and its
details (a JSON object) with the writer's ``origin`` (host and boot id,
:mod:`ketter.runtime.identity`): a node's name is checked against them."""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping

from ketter.store.composite.core import CompositeCore


class CompositeHeartbeats(CompositeCore):
    """Heartbeats (see :class:`ketter.store.ports.heartbeats.HeartbeatsPort`)."""

    @abc.abstractmethod
    def _put_heartbeat(self, component: str, node: str, *, pid: int, now: float, text: str) -> None:
        """Insert the ``(component, node)`` row, or update its pid, time and details."""

    @abc.abstractmethod
    def lease_clock(self, now: float) -> float:
        """The leases' clock (:class:`ketter.store.ports.leases.LeasesPort`)."""

    def beat(self, node: str, details: Mapping[str, str], *, pid: int, now: float) -> None:
        from ketter.runtime.identity import origin

        with self.transaction():
            stamp = self.lease_clock(now)
            for component, text in details.items():
                self._put_heartbeat(
                    component, node, pid=pid, now=stamp, text=_with_origin(text, origin())
                )


def _with_origin(text: str, where: dict[str, str]) -> str:
    """``text`` (a JSON object) with ``origin``; any other text as it is."""
    try:
        details = json.loads(text)
    except ValueError:
        return text
    if not isinstance(details, dict):
        return text
    details["origin"] = where
    return json.dumps(details, ensure_ascii=False)
