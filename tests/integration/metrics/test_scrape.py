"""A real scrape after real transfers (``ketter metrics``, real workers
moving real files): promtool finds nothing to say, the values are the
transfers made, every metric the dashboard and the alert rules read is
there, and the counters survive restarts of the workers, never falling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.jobs.harness import Node
from tests.integration.metrics.promql import (
    check_metrics,
    dashboard_expressions,
    metric_names,
    rule_expressions,
    samples,
    value,
)

ROUTES = ("copy", "move", "renames", "units")
STATES = (
    "detected",
    "validated",
    "packaged",
    "transferring",
    "verifying",
    "completed",
    "retry_wait",
    "rolling_back",
    "failed",
    "superseded",
    "cancelled",
)


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path)
    yield n
    n.cleanup()


def scrape(node: Node) -> bytes:
    result = node.ketter("metrics")
    assert result.returncode == 0, result.stderr
    return result.stdout.encode()


def deliver(node: Node, files: dict[str, bytes]) -> None:
    """Enqueue ``route/name → content``, run the workers until every job is done, stop them."""
    for rel, data in files.items():
        path = node.root / "src" / rel
        path.write_bytes(data)
        node.ketter("enqueue", str(path), "--route", rel.split("/")[0], check=True)
    workers = node.start_workers()
    node.wait_ready(workers)
    node.wait_for(node.all_done, what="the transfers", proc=workers)
    assert node.stop(workers) == 0


def counters(body: bytes) -> dict[tuple[str, frozenset], float]:
    return {
        (name, labels): v
        for name, series in samples(body).items()
        if name.endswith("_total")
        for labels, v in series.items()
    }


def test_a_scrape_after_real_transfers(node: Node) -> None:
    first = {
        "copy/a.mov": os.urandom(300_000),
        "copy/b.mov": os.urandom(70_000),
        "move/c.wav": os.urandom(123_457),
    }
    deliver(node, first)
    body = scrape(node)
    check_metrics(body)
    assert value(body, "ketter_transfers_total", route="copy", result="completed") == 2
    assert value(body, "ketter_transfers_total", route="move", result="completed") == 1
    assert value(body, "ketter_transfers_total", route="copy", result="failed") == 0
    assert value(body, "ketter_transfers_total", route="copy", result="cancelled") == 0
    assert value(body, "ketter_bytes_verified_total", route="copy") == 370_000
    assert value(body, "ketter_bytes_verified_total", route="move") == 123_457
    assert value(body, "ketter_files_transferred_total", route="copy") == 2
    assert value(body, "ketter_source_deletes_total", route="move") == 1
    assert value(body, "ketter_source_deletes_total", route="copy") == 0
    assert value(body, "ketter_transfer_seconds_total", route="copy") > 0
    assert value(body, "ketter_jobs", route="copy", state="completed") == 2
    assert value(body, "ketter_oldest_waiting_job_age_seconds", route="copy") == 0
    assert value(body, "ketter_route_paused", route="copy") == 0
    assert value(body, "ketter_last_success_timestamp_seconds", route="move") > 1.7e9
    assert value(body, "ketter_heartbeat_age_seconds", process="workers") >= 0
    assert value(body, "ketter_store_wal_in_use_bytes") >= 0  # SQLite: the WAL's part in use
    found = samples(body)
    # Every configured route × every state, at 0 until used; no path or id labels.
    assert {dict(k)["route"] for k in found["ketter_jobs"]} == set(ROUTES)
    assert {(dict(k)["route"], dict(k)["state"]) for k in found["ketter_jobs"]} == {
        (r, s) for r in ROUTES for s in STATES
    }
    labels = {name for series in found.values() for k in series for name, _ in k}
    assert labels <= {"route", "result", "state", "reason", "process", "version"}
    assert b"a.mov" not in body and str(node.root).encode() not in body

    # Every metric the dashboard and the alert rules read is in the scrape.
    for where, expr in [*dashboard_expressions(), *rule_expressions()]:
        missing = metric_names(expr) - set(found)
        assert not missing, f"{where} reads {missing}, not in a real scrape"

    # Restart the workers (no work): nothing changes; one more delivery: the
    # totals only grow, and by exactly that delivery.
    workers = node.start_workers()
    node.wait_ready(workers)
    assert node.stop(workers) == 0
    again = scrape(node)
    assert counters(again) == counters(body)
    deliver(node, {"copy/d.mov": os.urandom(5_000)})
    later = scrape(node)
    check_metrics(later)
    before, after = counters(body), counters(later)
    assert all(after[key] >= v for key, v in before.items())
    assert value(later, "ketter_transfers_total", route="copy", result="completed") == 3
    assert value(later, "ketter_bytes_verified_total", route="copy") == 375_000


def test_ketter_metrics_refuses_a_store_from_before_the_counters(node: Node) -> None:
    import sqlite3

    con = sqlite3.connect(node.db_path)
    con.execute("DROP TABLE counters")
    con.commit()
    con.close()
    result = node.ketter("metrics")
    assert result.returncode == 2
    assert "ketter db upgrade" in result.stderr and "counters" in result.stderr
