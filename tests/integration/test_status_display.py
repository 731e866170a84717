"""``ketter status`` for people (issue #14 finding 19): progress as bytes
done / total, percent and rate (not a raw dict), and a job that finished
since the last heartbeat is never shown as running."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from ketter.audit.chain import AuditChain
from ketter.config import load_config
from ketter.jobs.claim import claim_job, renew
from ketter.jobs.lease import LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.runtime.signals import Shutdown
from ketter.store import open_store
from ketter.store.sqlite import SqliteJobStore
from ketter.watcher.heartbeat import beat
from tests.conftest import KETTER, cli_env

MiB = 2**20


def test_status_shows_progress_for_people_and_no_finished_job_running(
    tmp_path: Path, write_config
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    path = write_config(
        f"""
        state_dir: {tmp_path}/state
        routes:
          - {{name: r, source: {tmp_path}/in, destination: {tmp_path}/out}}
        """
    )
    config = load_config(str(path))
    db = open_store(config.db_path)
    store = SqliteJobStore(db, AuditChain(node=config.node))
    now = time.time()
    jobs = []
    for name, size in (("done.mov", 1000), ("big.mov", 768 * MiB)):
        src = tmp_path / "in" / name
        with open(src, "wb") as fh:
            fh.truncate(size)
        (result,) = submit_path(store, config, config.route("r"), os.fsencode(src), now=now)
        jobs.append(result.job_id)
    done, big = jobs
    shutdown = Shutdown()
    runner = JobRunner(
        config, store=store, shutdown=shutdown, keeper=LeaseKeeper(config, shutdown, store=store)
    )
    assert runner.handle(done) == done
    # The big one is being copied: claimed, 384 MiB done 4 s later.
    claimed = claim_job(store, config, hint=big, owner="host:1:w", now=now)
    assert claimed is not None and claimed.job_id == big
    later = now + 4
    assert renew(
        store, big, claimed.claim, now=later, ttl=300, bytes_done=384 * MiB, progress_at=later
    )
    # The workers' last heartbeat, written before `done` completed.
    beat(
        store,
        config.node,
        {
            "workers": {
                "workers": 4,
                "running": [
                    {"job_id": done, "phase": "copy", "bytes": 1000},
                    {"job_id": big, "phase": "copy", "bytes": 256 * MiB},
                ],
            }
        },
        now=now,
    )
    db.close()
    out = subprocess.run(
        [*KETTER, "status", "--config", str(path)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "{" not in text and "'job_id'" not in text, text
    running = text.split("running jobs:")[1].split("\n\n")[0]
    assert f"{big}" in running and "384.0 MiB / 768.0 MiB (50%)" in running, running
    assert "MB/s" in running
    assert f"job {done} " not in text, text  # finished: not in the heartbeat's list
    assert f"job {big} copy 256.0 MiB" in text, text
    # --json keeps the figures raw, with the finished job dropped too.
    raw = subprocess.run(
        [*KETTER, "status", "--config", str(path), "--json"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(raw.stdout)
    assert [r["job_id"] for r in data["running"]] == [big]
    (workers,) = [b for b in data["heartbeats"] if b["component"] == "workers"]
    assert [r["job_id"] for r in workers["details"]["running"]] == [big]


def test_a_stopped_heartbeat_reads_stopped() -> None:
    from ketter.cli.inspect import heartbeat_text

    assert heartbeat_text({"stopped": True}) == "stopped cleanly"
    assert heartbeat_text({"workers": 2, "running": []}) == "workers 2, running: none"
