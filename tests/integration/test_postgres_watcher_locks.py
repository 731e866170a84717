"""The watcher's route locks on PostgreSQL (issue #18 item 4), on a real
cluster and a real :class:`~ketter.store.postgres.route_locks.RouteLocks`:
a watcher takes its routes at its first tick (it used to start a
``lock_interval`` late), and a store back from an outage stays back (the
lost lock connection's old error paused it again until the next refresh).
The clock the watcher reads is the test's, so every step is a tick."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from ketter.audit.chain import AuditChain
from ketter.config import parse_config
from ketter.queue import build_queue
from ketter.store.postgres import open_pg_job_store
from ketter.watcher import Watcher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watcher(tmp_path: Path, dsn: str, clock: Clock) -> Watcher:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    text = (
        f"state_dir: '{tmp_path / 'state'}'\nnode: n1\n"
        f"store: {{backend: postgresql, dsn: '{dsn}'}}\n"
        "lease: {ttl: 30s}\n"
        f"routes:\n  - name: ingest\n    source: '{src}'\n    destination: '{dst}'\n"
        "    poll_interval: 2s\n    stable_seconds: 1s\n"
    )
    config = parse_config(text, path=str(tmp_path / "ketter.yaml"))
    # As the services open it: with the guard that pauses on an outage.
    (tmp_path / "state").mkdir()
    store = open_pg_job_store(
        dsn, AuditChain(node="n1"), status_path=str(tmp_path / "state" / "ketter.db")
    )
    # A heartbeat (the probe that resumes a paused store) at every tick the
    # test's clock moves: the recovery comes before the next lock check.
    return Watcher(
        config, store=store, queue=build_queue(config), clock=clock, heartbeat_interval=0.1
    )


def test_a_watcher_takes_its_routes_at_its_first_tick(pg_dsn: str, tmp_path: Path) -> None:
    clock = Clock()
    watcher = _watcher(tmp_path, pg_dsn, clock)
    try:
        watcher.start()
        watcher.tick()
        assert watcher.locks is not None and watcher.locks.held == {"ingest"}
        assert [r.leading for r in watcher.routes] == [True]
    finally:
        watcher.close()


def test_a_store_back_from_an_outage_stays_back(pg_dsn: str, tmp_path: Path) -> None:
    clock = Clock()
    watcher = _watcher(tmp_path, pg_dsn, clock)
    guard = watcher.store.guard
    assert guard is not None and watcher.locks is not None
    try:
        watcher.start()
        watcher.tick()
        assert watcher.locks.held == {"ingest"}
        # An administrator ends the route locks' session: the next refresh
        # finds the connection gone, the store counts as unavailable.
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'ketter watcher%' AND datname = current_database()"
            ).fetchall()
        assert ended == [(True,)]
        clock.now += watcher.lock_interval
        watcher.tick()
        assert watcher.locks.error is not None and guard.unwritable
        # The heartbeat's probe finds the database fine (its own connection):
        # the store is back. The watcher's clock has not reached the next
        # lock check, yet the store must not be taken down again by the old
        # error, and the route is led again at the next tick.
        deadline = time.monotonic() + 30
        while guard.unwritable and time.monotonic() < deadline:
            clock.now += 0.1
            watcher.tick()
            time.sleep(0.2)  # the probe's own back-off, in real seconds
        assert not guard.unwritable
        clock.now += 0.1
        watcher.tick()
        assert not guard.unwritable, "the old lock error paused the store again"
        assert watcher.locks.error is None and watcher.locks.held == {"ingest"}
        assert [r.leading for r in watcher.routes] == [True]
    finally:
        watcher.close()
