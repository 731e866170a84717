"""A scrape of a job store with 1,000,000 jobs stays within 100 ms (issue
#17): every read is an index seek or a small table (``job_counts``,
``counters``), none counts the jobs."""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config.schema import Config, RouteConfig
from ketter.metrics.exposition import render_metrics
from ketter.store.db import connect, upgrade
from ketter.store.sqlite import open_readonly_job_store

JOBS = 1_000_000
ROUTES = [f"route{i}" for i in range(8)]
#: Mostly history, a few thousand jobs in flight or waiting.
STATES = ["completed"] * 95 + ["failed"] * 2 + ["superseded", "detected", "retry_wait"]


def _store(path: Path) -> None:
    db = connect(path)
    upgrade(db)
    db.close()
    con = sqlite3.connect(path)
    rng = random.Random(17)
    rows = (
        (ROUTES[i % 8], b"/src/%d" % i, f"/src/{i}", f"k{i}", rng.choice(STATES), 1e9 + i)
        for i in range(JOBS)
    )
    con.executemany(
        "INSERT INTO jobs (route, mode, kind, source_path, source_display, source_key, size, "
        "file_count, state, attempt, priority, bytes_done, node, created_at, updated_at) "
        "VALUES (?, 'copy', 'file', ?, ?, ?, 100, 1, ?, 0, 0, 0, 'n', ?, 1e9)",
        rows,
    )
    con.executemany(
        "INSERT INTO counters (route, name, value) VALUES (?, 'transfers.completed', 1e6)",
        [(r,) for r in ROUTES],
    )
    con.execute(
        "INSERT INTO heartbeats (component, node, pid, ts, details) "
        "VALUES ('workers', 'n', 1, 1e9, '{}')"
    )
    con.commit()
    con.close()


@pytest.mark.slow
def test_a_scrape_of_a_million_jobs_takes_under_100_ms(tmp_path: Path) -> None:
    path = tmp_path / "ketter.db"
    _store(path)
    store = open_readonly_job_store(path, AuditChain(node="n", may_append=False))
    config = Config(
        routes=tuple(RouteConfig(name=r, source="/s", destination="/d") for r in ROUTES)
    )
    try:
        render_metrics(store, config, now=2e9)  # warm the page cache
        times = []
        for _ in range(20):
            start = time.perf_counter()
            body, _ = render_metrics(store, config, now=2e9)
            times.append(time.perf_counter() - start)
    finally:
        store.close()
    assert b'ketter_jobs{route="route3",state="completed"}' in body
    counted = sum(
        float(line.rsplit(b" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(b"ketter_jobs{")
    )
    assert counted == JOBS
    assert statistics.median(times) < 0.100, f"scrape median {statistics.median(times):.3f} s"
