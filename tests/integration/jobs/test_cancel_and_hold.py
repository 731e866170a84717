"""An operator's cancel of a job and hold of a route, against real `ketter
workers` (and `ketter watcher`) processes moving real files (#17).

* a copy cancelled mid-copy ends ``cancelled`` within seconds: no temporary
  left, nothing delivered, the source intact, the events in the chain, the
  chain verifies; re-queued, it is delivered;
* a waiting job is cancelled at once; a finished or missing one is refused;
* a job whose delivery is being placed or is placed refuses the cancel and
  completes;
* a job left in flight, or a member of a batch of small files, is rolled
  back by the worker that claims it;
* a held route gets no claims (its files wait ``detected``), across a
  restart of the workers and an outage pause the sweep lifts; released,
  its files are delivered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import load_config
from ketter.store import open_store
from ketter.store.sqlite import SqliteJobStore
from tests.conftest import cli_env

from .harness import KETTER, Node, temporaries

MiB = 1024 * 1024
#: A pause at each 1 MiB checkpoint of a copy: a 32 MiB copy takes seconds.
SLOW = {"KETTER_FAULT_DELAY": "copy-progress=0.2"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.cleanup()


def _job(node: Node, job_id: int) -> dict:
    con_rows = node.query(
        "SELECT state, bytes_done, error, cancel_requested_by FROM jobs WHERE id = ?", (job_id,)
    )
    state, done, error, by = con_rows[0]
    return {"state": state, "bytes_done": done, "error": error, "by": by}


def _wait(predicate, what: str, timeout: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    """Wait for ``predicate`` (a generous deadline); the seconds it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def _enqueue(node: Node, route: str, path: Path) -> int:
    node.ketter("enqueue", "--route", route, str(path), check=True)
    return int(node.query("SELECT MAX(id) FROM jobs")[0][0])


def _stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP by ``KETTER_FAULT_STOP``)."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


def _logs(node: Node) -> str:
    return "".join(p.read_text(errors="replace") for p in node.root.glob("workers-*.log"))


def test_a_copy_cancelled_mid_copy_is_rolled_back_then_delivered_when_requeued(
    node: Node,
) -> None:
    workers = node.start_workers(env=SLOW)
    node.wait_ready(workers)
    src = node.root / "src" / "copy" / "reel.mov"
    data = os.urandom(32 * MiB)
    src.write_bytes(data)
    job_id = _enqueue(node, "copy", src)
    dst = node.root / "dst" / "copy"
    node.wait_for(
        lambda: _job(node, job_id)["state"] == "transferring" and _job(node, job_id)["bytes_done"],
        what="the copy to be under way",
        proc=workers,
    )
    assert temporaries(dst), "a temporary is being written"

    asked = time.monotonic()
    cancel = node.ketter("cancel", str(job_id))
    assert cancel.returncode == 0, cancel.stderr
    assert "cancel requested" in cancel.stdout, cancel.stdout
    took = _wait(lambda: _job(node, job_id)["state"] == "cancelled", "the job to end cancelled")
    # Noticed at a progress check (about once a second while bytes move):
    # nowhere near the seconds the rest of the copy would take.
    assert time.monotonic() - asked < 10, took

    job = _job(node, job_id)
    assert job["by"] and job["state"] == "cancelled"
    assert temporaries(node.root / "dst") == []
    assert not (dst / "reel.mov").exists()
    assert src.read_bytes() == data
    events = node.events(job_id)
    assert events[-3:] == ["cancel_requested", "rollback", "cancel"], events
    assert "fail" not in events and "retry" not in events
    assert "job_failed" not in _logs(node)  # quiet: no alert for what was asked
    verify = node.ketter("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The watcher would not detect the version again (a cancelled job settles
    # its key, like a failed one); `ketter requeue` sends it again.
    status = node.ketter("status", "--json")
    states = {row["state"]: row["jobs"] for row in json.loads(status.stdout)["states"]}
    assert states == {"cancelled": 1}
    requeue = node.ketter("requeue", str(job_id))
    assert requeue.returncode == 0, requeue.stderr
    assert "was cancelled" in requeue.stdout, requeue.stdout
    node.wait_for(
        lambda: _job(node, job_id)["state"] == "completed", what="the delivery", proc=workers
    )
    assert (dst / "reel.mov").read_bytes() == data
    assert _job(node, job_id)["by"] is None  # the re-queue cleared the request
    assert node.stop(workers) == 0
    assert node.ketter("audit", "verify").returncode == 0


def test_a_job_left_in_flight_is_cancelled_by_the_next_claim(node: Node) -> None:
    """Stopped gracefully mid-copy, the job keeps its state and partial for
    a resume; a cancel then is a request (no worker holds it, and the API
    process never touches media files), carried out by the next claim: the
    partial removed, ``cancelled``."""
    workers = node.start_workers(env=SLOW)
    node.wait_ready(workers)
    src = node.root / "src" / "copy" / "long.mov"
    data = os.urandom(32 * MiB)
    src.write_bytes(data)
    job_id = _enqueue(node, "copy", src)
    node.wait_for(
        lambda: _job(node, job_id)["bytes_done"] >= 2 * MiB,
        what="a partial worth resuming",
        proc=workers,
    )
    assert node.stop(workers) == 0
    assert "release" in node.events(job_id)
    assert _job(node, job_id)["state"] == "transferring"
    assert temporaries(node.root / "dst"), "the partial is kept for a resume"

    cancel = node.ketter("cancel", str(job_id))
    assert cancel.returncode == 0 and "cancel requested" in cancel.stdout, cancel.stdout
    assert _job(node, job_id)["state"] == "transferring"

    workers = node.start_workers()
    node.wait_ready(workers)
    node.wait_for(
        lambda: _job(node, job_id)["state"] == "cancelled", what="the cancel", proc=workers
    )
    assert temporaries(node.root / "dst") == []
    assert not (node.root / "dst" / "copy" / "long.mov").exists()
    assert src.read_bytes() == data
    assert node.events(job_id)[-4:] == ["cancel_requested", "resume", "rollback", "cancel"]
    assert node.stop(workers) == 0
    assert node.ketter("audit", "verify").returncode == 0


def test_a_waiting_job_is_cancelled_at_once_and_others_are_refused(node: Node) -> None:
    src = node.root / "src" / "copy" / "take.wav"
    src.write_bytes(os.urandom(100_000))
    job_id = _enqueue(node, "copy", src)  # no workers: it waits, detected
    cancel = node.ketter("cancel", str(job_id))
    assert cancel.returncode == 0, cancel.stderr
    assert f"job {job_id}: cancelled (was detected" in cancel.stdout, cancel.stdout
    assert _job(node, job_id)["state"] == "cancelled"
    assert node.events(job_id)[-3:] == ["cancel_requested", "rollback", "cancel"]

    again = node.ketter("cancel", str(job_id), "999")
    assert again.returncode == 1
    assert "already finished (cancelled)" in again.stderr, again.stderr
    assert "job 999: no such job" in again.stderr, again.stderr

    workers = node.start_workers()
    node.wait_ready(workers)
    # The sweep rings for due jobs at once (sweep_interval 0.5 s): a few of
    # its rounds, and the cancelled job is still not picked up.
    beats = node.query("SELECT ts FROM heartbeats WHERE component='workers'")[0][0]
    node.wait_for(
        lambda: node.query("SELECT ts FROM heartbeats WHERE component='workers'")[0][0] > beats + 3,
        what="a few sweeps",
        proc=workers,
    )
    assert _job(node, job_id)["state"] == "cancelled"
    assert not (node.root / "dst" / "copy" / "take.wav").exists()
    assert node.stop(workers) == 0
    assert node.ketter("audit", "verify").returncode == 0


@pytest.mark.parametrize(
    ("point", "answer"),
    [("before-rename", "being placed"), ("after-place-before-delete", "in place")],
)
def test_a_job_being_placed_or_placed_refuses_the_cancel_and_completes(
    node: Node, point: str, answer: str
) -> None:
    workers = node.start_workers(env={"KETTER_FAULT_STOP": point})
    node.wait_ready(workers)
    src = node.root / "src" / "move" / "final.mov"
    data = os.urandom(3 * MiB)
    src.write_bytes(data)
    job_id = _enqueue(node, "move", src)
    _wait(lambda: _stopped(workers.pid), f"the workers to stop at {point}")
    assert _job(node, job_id)["state"] == "verifying"

    cancel = node.ketter("cancel", str(job_id))
    assert cancel.returncode == 1
    assert f"verified and {answer}" in cancel.stderr, cancel.stderr
    assert "only moves forward" in cancel.stderr

    os.kill(workers.pid, signal.SIGCONT)
    node.wait_for(
        lambda: _job(node, job_id)["state"] == "completed", what="the delivery", proc=workers
    )
    assert (node.root / "dst" / "move" / "final.mov").read_bytes() == data
    assert not src.exists()  # a move: the source deleted after verification
    assert "cancel_requested" not in node.events(job_id)
    assert node.stop(workers) == 0
    assert node.ketter("audit", "verify").returncode == 0


# -- hold ---------------------------------------------------------------------


def _start_watcher(node: Node) -> subprocess.Popen:
    log = open(node.root / "watcher.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*KETTER, "--config", str(node.config), "watcher"], stdout=log, stderr=log, env=cli_env()
    )
    log.close()
    node.procs.append(proc)
    return proc


def _sweeps(node: Node, proc: subprocess.Popen, seconds: float) -> None:
    """Until the workers have beaten ``seconds`` more (their sweep runs every
    0.5 s): time for any claim to happen, waited on a condition."""

    def beat() -> float:
        rows = node.query(
            "SELECT ts FROM heartbeats WHERE component='workers' AND pid=?", (proc.pid,)
        )
        return rows[0][0] if rows else 0.0

    first = beat()
    node.wait_for(lambda: beat() > first + seconds, what="the workers to beat", proc=proc)


def test_a_held_route_waits_across_restarts_and_outages_until_released(node: Node) -> None:
    pause = node.ketter("pause", "copy", "--reason", "grading review until 3pm")
    assert pause.returncode == 0, pause.stderr
    again = node.ketter("pause", "copy", "--reason", "other")
    assert again.returncode == 1 and "already held" in again.stderr
    unknown = node.ketter("pause", "nope", "--reason", "x")
    assert unknown.returncode == 2
    assert "no route named 'nope'" in unknown.stderr and "copy, move" in unknown.stderr
    assert node.ketter("pause", "copy").returncode == 2  # --reason is required

    watcher = _start_watcher(node)
    workers = node.start_workers()
    node.wait_ready(workers)
    files = {}
    for name in ("a.wav", "b.wav"):
        files[name] = os.urandom(200_000)
        (node.root / "src" / "copy" / name).write_bytes(files[name])
    # Another route runs as usual meanwhile.
    other = node.root / "src" / "move" / "c.wav"
    other.write_bytes(b"c" * 1000)
    node.wait_for(lambda: len(node.states()) == 3, what="the watcher to enqueue", proc=watcher)
    node.wait_for(lambda: "completed" in node.states().values(), what="the move", proc=workers)
    _sweeps(node, workers, 3)

    def copy_states() -> list[str]:
        return [r[0] for r in node.query("SELECT state FROM jobs WHERE route='copy'")]

    def copy_claims() -> int:
        return node.query("SELECT COUNT(*) FROM events WHERE route='copy' AND event='claim'")[0][0]

    assert copy_states() == ["detected", "detected"] and copy_claims() == 0

    status = node.ketter("status", "--json")
    held = json.loads(status.stdout)["held"]
    assert [(h["route"], h["reason"]) for h in held] == [("copy", "grading review until 3pm")]
    assert held[0]["by"] and held[0]["since"]
    text = node.ketter("status").stdout
    assert "held routes" in text and "grading review until 3pm" in text, text
    health = json.loads(node.ketter("health", "--json").stdout)
    route = next(c for c in health["checks"] if c["name"] == "route copy")
    assert route["ok"] and "held by" in route["detail"], route

    # A restart of the workers: the hold is in the job store, not in memory.
    assert node.stop(workers) == 0
    workers = node.start_workers()
    node.wait_ready(workers)
    _sweeps(node, workers, 2)
    assert copy_states() == ["detected", "detected"] and copy_claims() == 0

    # An outage pause of the same route, lifted by the workers' sweep (the
    # share is fine): the hold stays.
    config = load_config(node.config)
    store = SqliteJobStore(open_store(config.db_path), AuditChain(node=config.node))
    try:
        assert store.pause_route("copy", "share gone", now=time.time())
        node.wait_for(
            lambda: "route_resumed" in node.events(), what="the sweep's resume", proc=workers
        )
        status_row = store.route_status("copy")
        assert status_row is not None and (status_row.paused, status_row.held) == (0, 1)
    finally:
        store.close()
    _sweeps(node, workers, 2)
    assert copy_states() == ["detected", "detected"] and copy_claims() == 0

    resume = node.ketter("resume", "copy")
    assert resume.returncode == 0, resume.stderr
    node.wait_for(
        lambda: copy_states() == ["completed", "completed"], what="the deliveries", proc=workers
    )
    for name, data in files.items():
        assert (node.root / "dst" / "copy" / name).read_bytes() == data
    not_held = node.ketter("resume", "copy")
    assert not_held.returncode == 1 and "not held" in not_held.stderr
    events = node.events()
    assert events.count("route_held") == 1 and events.count("route_released") == 1
    assert node.stop(workers) == 0
    assert node.stop(watcher) == 0
    assert node.ketter("audit", "verify").returncode == 0


def test_a_batch_member_cancelled_leaves_the_batch_and_the_others_complete(node: Node) -> None:
    """Small files travel in batches (ketter.jobs.batch), their steps
    committed together: the cancelled one's step forward is refused in the
    shared commit, it is rolled back and ends cancelled; the rest deliver."""
    content = {}
    for i in range(4):
        path = node.root / "src" / "copy" / f"take_{i}.wav"
        content[path.name] = os.urandom(20_000 + i)
        path.write_bytes(content[path.name])
        _enqueue(node, "copy", path)
    workers = node.start_workers(env={"KETTER_FAULT_STOP": "after-claim"}, extra=("-w", "1"))
    _wait(lambda: _stopped(workers.pid), "the workers to stop after their first claim")
    # The batch's four jobs were claimed in one transaction, with the first.
    held = sorted(r[0] for r in node.query("SELECT id FROM jobs WHERE lease_owner IS NOT NULL"))
    assert len(held) == 4, held
    claimed = held[1]
    cancel = node.ketter("cancel", str(claimed))
    assert cancel.returncode == 0 and "cancel requested" in cancel.stdout, cancel.stdout
    os.kill(workers.pid, signal.SIGCONT)
    node.wait_for(
        lambda: sorted(node.states().values()) == ["cancelled"] + ["completed"] * 3,
        what="the batch to finish",
        proc=workers,
    )
    assert node.query("SELECT COUNT(*) FROM events WHERE event = 'claim'")[0][0] == 4
    name = node.query("SELECT source_display FROM jobs WHERE id = ?", (claimed,))[0][0]
    delivered = {p.name for p in (node.root / "dst" / "copy").iterdir()}
    assert delivered == set(content) - {Path(name).name}
    assert temporaries(node.root / "dst") == []
    assert node.events(claimed)[-3:] == ["cancel_requested", "rollback", "cancel"]
    assert "prepare" not in node.events(claimed)  # its step forward was refused
    # Side by side: the others were verified before the first was placed.
    trail = [e for e in node.events() if e in ("verify", "place")]
    assert trail == ["verify"] * 3 + ["place"] * 3, trail
    assert node.stop(workers) == 0
    assert node.ketter("audit", "verify").returncode == 0
