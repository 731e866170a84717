"""A whole node on PostgreSQL (issue #18): ``ketter watcher`` and ``ketter
workers`` as real processes with ``store: {backend: postgresql}`` on a
throw-away cluster (``pg_dsn``, tests/pg.py), a copy route and a move route.

Files are delivered byte-identical; the workers killed with SIGKILL mid-copy
(the ``mid-copy`` fault point: the process kills itself there, exactly what
kill -9 does) and again between a move's placement and its source deletion
lose nothing once they are started again; ``status``, ``jobs``, ``job``,
``health``, ``audit verify``, ``db status`` and ``db upgrade`` answer on the
database. Conditions are polled with generous deadlines, never slept on.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.pgnode import DEADLINE, MiB, PgNode
from tests.integration.pgnode import digest as _digest
from tests.integration.pgnode import drop as _drop
from tests.integration.pgnode import leftovers as _leftovers


@pytest.mark.slow
def test_a_whole_node_runs_on_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    node = PgNode(tmp_path, pg_dsn)
    upgrade = node.ketter("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "schema is up to date" in upgrade.stdout  # the fixture's database is migrated
    db_status = node.ketter("db", "status")
    assert db_status.returncode == 0, db_status.stdout + db_status.stderr
    assert "postgresql job store" in db_status.stdout and "up to date" in db_status.stdout
    # Nothing under state_dir holds a job store or a queue: they are in the database.
    first = {f"c{i}.bin": os.urandom(i * 40_000 + 1) for i in range(6)}
    first["big-copy.mov"] = os.urandom(6 * MiB + 7)
    moved = {f"m{i}.bin": os.urandom(i * 30_000 + 3) for i in range(6)}
    moved["big-move.mov"] = os.urandom(5 * MiB + 11)
    try:
        node.start("watcher")
        # 1. The workers kill themselves (SIGKILL) at their first copy's
        # checkpoint: a kill -9 mid-copy, wherever the flow is then.
        workers = node.start("workers", KETTER_FAULT="mid-copy")
        _drop(tmp_path / "in-copy", first)
        _drop(tmp_path / "in-move", moved)
        deadline = time.monotonic() + DEADLINE
        while workers.poll() is None:
            assert time.monotonic() < deadline, f"no kill mid-copy:\n{node.logs()}"
            time.sleep(0.05)
        assert workers.returncode == -signal.SIGKILL
        states = node.states()
        assert any(s not in ("completed",) for s in states.values()), states
        # 2. Started again, killed between a move's placement and its
        # source deletion (the point of no return already passed).
        workers = node.start("workers", KETTER_FAULT="after-place-before-delete")
        deadline = time.monotonic() + DEADLINE
        while workers.poll() is None:
            assert time.monotonic() < deadline, f"no kill before a delete:\n{node.logs()}"
            time.sleep(0.05)
        assert workers.returncode == -signal.SIGKILL
        # 3. Started again for good: everything arrives, nothing is lost.
        node.start("workers")
        names = set(first) | set(moved)
        node.wait_for(
            lambda: set(node.states()) >= names
            and all(node.states()[n] == "completed" for n in names),
            "every job to complete",
        )
        for name, data in first.items():
            assert (tmp_path / "out-copy" / name).read_bytes() == data, name
            assert (tmp_path / "in-copy" / name).read_bytes() == data, name  # copy keeps it
        for name, data in moved.items():
            assert _digest((tmp_path / "out-move" / name).read_bytes()) == _digest(data), name
            assert not (tmp_path / "in-move" / name).exists(), name  # moved: released
        for folder in ("out-copy", "out-move"):
            assert _leftovers(tmp_path / folder) == [], folder
        for folder, files in (("out-copy", first), ("out-move", moved)):
            delivered = [p.name for p in (tmp_path / folder).iterdir()]
            assert sorted(n for n in delivered if not n.startswith(".")) == sorted(files)
        # One job per file, one placement each (the kills recovered, not repeated).
        per_source = node.query("SELECT source_display, count(*) FROM jobs GROUP BY 1")
        assert all(count == 1 for _, count in per_source), per_source
        assert node.query("SELECT count(*) FROM events WHERE event = 'recover'")[0][0] >= 1
        # No job store or queue file under state_dir: both are in the database.
        assert not list((tmp_path / "state").glob("*.db"))
        # 4. Every connection of the node cut by the server (an administrator's
        # pg_terminate_backend, as a failover or a restart does): the
        # processes stay up, reconnect, and files dropped afterwards arrive.
        cut = node.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert len(cut) >= 2, cut  # the watcher's and the workers' at least
        later = {"after-cut-c.bin": os.urandom(70_001)}
        later_moved = {"after-cut-m.bin": os.urandom(90_001)}
        _drop(tmp_path / "in-copy", later)
        _drop(tmp_path / "in-move", later_moved)
        names |= set(later) | set(later_moved)
        first |= later
        moved |= later_moved
        node.wait_for(
            lambda: set(node.states()) >= names
            and all(node.states()[n] == "completed" for n in names),
            "the files dropped after the cut to complete",
        )
        assert (tmp_path / "out-copy" / "after-cut-c.bin").read_bytes() == later["after-cut-c.bin"]
        assert (tmp_path / "out-move" / "after-cut-m.bin").read_bytes() == (
            later_moved["after-cut-m.bin"]
        )
        assert not (tmp_path / "in-move" / "after-cut-m.bin").exists()
        # 5. The read side answers on the database.
        status = node.ketter("status", "--json")
        assert status.returncode == 0, status.stderr
        view = json.loads(status.stdout)
        assert json.dumps(view).count("completed") >= 1, view
        jobs = node.ketter("jobs", "--json", "--limit", "100")
        assert jobs.returncode == 0, jobs.stderr
        listed = json.loads(jobs.stdout)
        assert len(listed) == len(names) and {j["state"] for j in listed} == {"completed"}
        one = node.ketter("job", str(listed[0]["job_id"]), "--json")
        assert one.returncode == 0 and json.loads(one.stdout)["events"], one.stderr
        node.wait_for(lambda: node.ketter("health").returncode == 0, "health to pass")
        health = node.ketter("health")
        assert "job store" in health.stdout and "opens" in health.stdout, health.stdout
        verify_db = node.ketter("audit", "verify", "--db")
        assert verify_db.returncode == 0, verify_db.stdout + verify_db.stderr
        metrics = node.ketter("metrics")
        assert metrics.returncode == 0 and "ketter_" in metrics.stdout, metrics.stderr
        # 6. The commands that write, on the database: an operator's hold,
        # the re-queue, an API token.
        held = node.ketter("pause", "moves", "--reason", "maintenance")
        assert held.returncode == 0, held.stdout + held.stderr
        assert node.query("SELECT held FROM route_status WHERE route = 'moves'") == [(1,)]
        waiting = {"while-held.bin": os.urandom(50_003)}
        _drop(tmp_path / "in-move", waiting)
        node.wait_for(lambda: "while-held.bin" in node.states(), "the held route's detection")
        # Held: recorded, never claimed (a hold refuses every claim).
        assert node.states()["while-held.bin"] != "completed"
        assert "maintenance" in node.ketter("status").stdout
        resumed = node.ketter("resume", "moves")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        node.wait_for(
            lambda: node.states().get("while-held.bin") == "completed", "the job after the resume"
        )
        assert (tmp_path / "out-move" / "while-held.bin").read_bytes() == waiting["while-held.bin"]
        requeue = node.ketter("requeue", "--failed")
        assert requeue.returncode == 0, requeue.stdout + requeue.stderr
        made = node.ketter("token", "create", "ops", "--scopes", "transfers:read", "--routes", "*")
        assert made.returncode == 0 and made.stdout.startswith("ketter_"), made.stderr
        listed_tokens = node.ketter("token", "list", "--json")
        assert listed_tokens.returncode == 0, listed_tokens.stderr
        assert [t["name"] for t in json.loads(listed_tokens.stdout)] == ["ops"]
    finally:
        node.stop()
    # Stopped: the shipper has drained; the log and the database agree.
    verify = node.ketter("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The only errors logged are the cut's: the outage (paused, resumed) and
    # the audit shipper's pass that met it (retried; the events stay in the
    # database until shipped).
    errors = [
        f"{record['message']} {record.get('exc_info', '')}"
        for line in node.logs().splitlines()
        if line.startswith("{")
        for record in [json.loads(line)]
        if record.get("log.level") in ("error", "critical")
    ]
    assert errors, "the cut went unnoticed"
    # watchdog's own line when an inotify emitter reads after its observer
    # was stopped (watchdog #963: logged, no event lost) comes from the
    # watcher's route watches torn down and set up again around the cut.
    cut_words = (
        "terminating connection",
        "server closed the connection",
        "queue_events() called when the thread is inactive",
    )
    assert all(any(w in error for w in cut_words) for error in errors), errors
