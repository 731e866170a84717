"""``ketter db copy`` refuses a store in use: which heartbeats say so.
A real SQLite store, its heartbeats written as the services write them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ketter.audit.chain import AuditChain
from ketter.store.copy import live_components
from ketter.store.sqlite import open_job_store
from ketter.workers.consumer import write_heartbeat


def test_a_clean_stop_is_not_running_a_killed_process_and_the_api_are(tmp_path: Path) -> None:
    path = tmp_path / "ketter.db"
    store = open_job_store(path, AuditChain(node="n1"))
    try:
        # The watcher stopped cleanly (its last beat says so); the workers
        # were killed (their last beat is an ordinary one); the API runs.
        write_heartbeat(store, "watcher", "n1", {"stopped": True}, now=1000.0)
        write_heartbeat(store, "workers", "n1", {"threads": 2}, now=1000.0)
        write_heartbeat(store, "api", "n1", {}, now=1000.0)
    finally:
        store.close()
    src = sqlite3.connect(path)
    try:
        live = live_components(src, now=1010.0, stale=60.0)
        assert [line.split(" ")[0] for line in sorted(live)] == ["api", "workers"]
        assert all("of node n1" in line and "10 s ago" in line for line in live)
        # Older than `stale`: nothing runs any more, whatever the last beat said.
        assert live_components(src, now=1061.0, stale=60.0) == []
    finally:
        src.close()
