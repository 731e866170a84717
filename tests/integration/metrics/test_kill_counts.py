"""A worker SIGKILLed mid-transfer and the worker that takes the job over
count the delivery once: the counters move in the transaction of the
transition they count, and a killed transaction counts nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.jobs.harness import Node
from tests.integration.metrics.promql import check_metrics, value
from tests.integration.metrics.test_scrape import scrape

SMALL = os.urandom(300_000)
BIG = os.urandom(6 * 2**20 + 12345)  # > resume_min_bytes: the next attempt resumes

CASES = [
    # (fault point, route, payload): killed while bytes move, after the
    # verification was recorded, after the placement, between the placement
    # and the source deletion of a move.
    ("mid-copy", "move", BIG),
    ("mid-copy", "copy", SMALL),
    ("before-rename", "copy", SMALL),
    ("after-place", "move", SMALL),
    ("after-place-before-delete", "move", SMALL),
]


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path)
    yield n
    n.cleanup()


@pytest.mark.parametrize(
    ("point", "route", "data"), CASES, ids=[f"{c[0]}-{c[1]}-{len(c[2])}" for c in CASES]
)
def test_kill_9_mid_transfer_counts_once(node: Node, point: str, route: str, data: bytes) -> None:
    src = node.root / "src" / route / "clip.mov"
    src.write_bytes(data)
    node.ketter("enqueue", str(src), "--route", route, check=True)
    killed = node.start_workers(fault=point)
    assert killed.wait(60) == -signal.SIGKILL, "the fault point was not reached"
    during = scrape(node)
    assert value(during, "ketter_transfers_total", route=route, result="completed") == 0

    taken_over = node.start_workers()
    node.wait_for(node.all_done, what="the job to finish", proc=taken_over)
    assert node.stop(taken_over) == 0
    assert node.states() == {1: "completed"}
    assert (node.root / "dst" / route / "clip.mov").read_bytes() == data

    body = scrape(node)
    check_metrics(body)
    assert value(body, "ketter_transfers_total", route=route, result="completed") == 1
    assert value(body, "ketter_transfers_total", route=route, result="failed") == 0
    assert value(body, "ketter_bytes_verified_total", route=route) == len(data)
    assert value(body, "ketter_files_transferred_total", route=route) == 1
    assert value(body, "ketter_source_deletes_total", route=route) == (route == "move")
    assert value(body, "ketter_jobs", route=route, state="completed") == 1
    assert value(body, "ketter_jobs", route=route, state="detected") == 0
