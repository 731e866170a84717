"""A randomized kill -9 campaign: files keep arriving while the workers are
killed at random, then every promise is checked for every file.

The seed is printed and settable (KETTER_CAMPAIGN_SEED). Waits fail after
60 s without a new event, never on a fixed deadline.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import load_config
from ketter.jobs.submit import submit_path
from ketter.store import open_store
from ketter.store.sqlite import SqliteJobStore
from tests.integration.jobs.harness import Node, temporaries, tree

MIN_EFFECTIVE_KILLS = 15
MAX_KILLS = 120
BATCHES = 8
MAX_BATCHES = 120
BACKLOG = 40  # jobs kept waiting, so that most kills land on a busy worker


def _drop(rng: random.Random, root: Path, batch: int) -> list[tuple[str, Path]]:
    """One batch of arrivals: (route, path) to submit."""
    out = []
    for i in range(rng.randint(2, 5)):
        route = rng.choice(["copy", "move"])
        size = rng.choice([rng.randint(1, 300_000), rng.randint(2, 4) * 2**20 + 17])
        path = root / "src" / route / f"b{batch:03d}_{i}.mov"
        path.write_bytes(rng.randbytes(size))
        out.append((route, path))
    if rng.random() < 0.6:
        folder = root / "src" / "units" / f"pkg{batch:03d}"
        for j in range(rng.choice([5, 12, 25, 30])):  # ≥ 20 files travel packaged
            f = folder / f"sub{j % 3}" / f"f{j:02d}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(rng.randbytes(rng.randint(100, 200_000)))
        out.append(("units", folder))
    return out


@pytest.mark.slow
def test_random_kill_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("KETTER_CAMPAIGN_SEED") or random.randrange(2**32))
    print(f"campaign seed {seed} (rerun with KETTER_CAMPAIGN_SEED={seed})")
    rng = random.Random(seed)
    node = Node(tmp_path, max_attempts=100)  # kills are not the files' fault
    config = load_config(node.config)
    db = open_store(config.db_path)
    store = SqliteJobStore(db, AuditChain(node=config.node))
    expected: dict[str, dict[str, bytes]] = {"copy": {}, "move": {}, "units": {}}
    # Widen the window in which a kill lands mid-copy (see runtime/faults.py).
    slow = {"KETTER_FAULT_DELAY": "copy-progress=0.25"}
    kills = effective = 0
    started = time.monotonic()
    batch = 0
    def figures() -> str:
        return (f"campaign: seed={seed} kills={kills} effective_kills={effective} "
                f"batches={batch} seconds={time.monotonic() - started:.1f}")

    try:
        while True:
            backlog = node.query("SELECT COUNT(*) FROM jobs WHERE state NOT IN "
                                 "('completed','failed')")[0][0]
            while batch < MAX_BATCHES and backlog < BACKLOG and (
                    batch < BATCHES or effective < MIN_EFFECTIVE_KILLS):
                # Keep a backlog so that most kills land on a worker mid-job.
                for route, path in _drop(rng, tmp_path, batch):
                    base = tmp_path / "src" / route
                    for rel, data in tree(path.parent if path.is_file() else base).items():
                        if path.is_file() and rel != path.name:
                            continue
                        if not path.is_file() and not rel.startswith(path.name + "/"):
                            continue
                        expected[route][rel] = data
                    submit_path(store, config, config.route(route), os.fsencode(path),
                                now=time.time())
                    backlog += 1
                batch += 1
            worker = node.start_workers(env=slow)
            node.wait_ready(worker)  # the kill window starts once it is running
            time.sleep(rng.uniform(0.5, 3.0))
            now = time.time()
            live = node.query("SELECT COUNT(*) FROM jobs WHERE lease_expires_at > ? AND "
                              "state NOT IN ('completed','failed')", (now,))[0][0]
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            kills += 1
            effective += 1 if live else 0
            events = node.events()
            if (batch >= BATCHES and effective >= MIN_EFFECTIVE_KILLS and "resume" in events
                    and "rollback" in events) or kills >= MAX_KILLS:
                break
        final = node.start_workers()
        node.wait_ready(final)
        node.wait_for(node.all_done, what="every job to finish", proc=final)
        assert node.stop(final) == 0
    finally:
        node.cleanup()
        db.close()
        with capsys.disabled():
            print("\n" + figures())

    events = node.events()
    resumed = node.query("SELECT COUNT(DISTINCT job_id) FROM events WHERE event='verify' "
                         "AND details NOT LIKE '%\"resumed_from\":0,%'")[0][0]
    rolled_back = node.query("SELECT COUNT(DISTINCT job_id) FROM events "
                             "WHERE event='rollback'")[0][0]
    states = node.states()
    files = sum(len(v) for v in expected.values())
    with capsys.disabled():
        print(f"\ncampaign: seed={seed} kills={kills} effective_kills={effective} "
              f"jobs={len(states)} files={files} resumed={resumed} "
              f"rolled_back={rolled_back} seconds={time.monotonic() - started:.1f}")
    assert effective >= MIN_EFFECTIVE_KILLS, f"only {effective} effective kills"
    assert "resume" in events and "rollback" in events
    assert set(states.values()) == {"completed"}, states
    assert tree(tmp_path / "dst" / "copy") == expected["copy"]
    assert tree(tmp_path / "dst" / "move") == expected["move"]
    delivered_units = {rel: data for rel, data in tree(tmp_path / "dst" / "units").items()
                       if "/ascmhl/" not in rel}  # the MHL manifest Ketter adds
    assert delivered_units == expected["units"]
    assert tree(tmp_path / "src" / "copy") == expected["copy"]  # copy sources intact
    assert tree(tmp_path / "src" / "move") == {}
    assert tree(tmp_path / "src" / "units") == {}
    assert temporaries(tmp_path) == []
    # exactly one delivery per job: one placement (or recovered placement) each
    places = node.query("SELECT job_id, COUNT(*) FROM events WHERE event IN ('place','skip') "
                        "GROUP BY job_id")
    assert all(count == 1 for _, count in places)
