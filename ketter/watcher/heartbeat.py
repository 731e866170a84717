"""Heartbeat rows (``heartbeats`` table) of the watcher and of each route.

One row per (component, node), replaced in place: ``watcher`` for the
process and ``route:<name>`` for each route's watch (last scan, files
watched, pending candidates, lost or not). ``ketter status`` shows them; a
row older than ``health.heartbeat_stale`` means the watcher is not running.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketter.store.port import JobStore


def beat(
    store: JobStore, node: str, rows: dict[str, dict[str, Any]], *, now: float | None = None
) -> None:
    """Upsert one heartbeat row per ``component → details`` in one commit."""
    stamp = time.time() if now is None else now
    store.beat(
        node,
        {
            component: json.dumps(details, sort_keys=True, default=str)
            for component, details in rows.items()
        },
        pid=os.getpid(),
        now=stamp,
    )


def beat_stopped(store: JobStore, node: str, component: str, *, now: float | None = None) -> None:
    """Record that ``component`` stopped cleanly (its last act on a graceful
    stop): ``health`` then says "stopped cleanly" instead of calling the aging
    row "stopped or hung" (issue #14 finding 19). A process that dies writes
    nothing, so a row without ``stopped`` that ages still reads as hung."""
    stamp = time.time() if now is None else now
    beat(
        store,
        node,
        {component: {"stopped": True, "clean": True, "stopped_at": stamp}},
        now=stamp,
    )
