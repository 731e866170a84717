"""The heartbeats area's composite operation, written once: one row per
component of a node upserted, all in one transaction."""

from __future__ import annotations

import abc
from collections.abc import Mapping

from ketter.store.composite.core import CompositeCore


class CompositeHeartbeats(CompositeCore):
    """Heartbeats (see :class:`ketter.store.ports.heartbeats.HeartbeatsPort`)."""

    @abc.abstractmethod
    def _put_heartbeat(self, component: str, node: str, *, pid: int, now: float, text: str) -> None:
        """Insert the ``(component, node)`` row, or update its pid, time and details."""

    def beat(self, node: str, details: Mapping[str, str], *, pid: int, now: float) -> None:
        with self.transaction():
            for component, text in details.items():
                self._put_heartbeat(component, node, pid=pid, now=now, text=text)
