"""A verified temporary swapped in the shared destination folder while its
job runs (issue #14, reviewer's finding 1): the real runner and job store.

Someone who can write in the destination folder renames the ``.part`` away
mid-copy and puts their own file under its name. Before the fix the
impostor was renamed into place as "verified", its inode recorded, and the
move deleted the source. Now the job fails (permanent, with an alert), the
source is kept, nothing is delivered, and the inode recorded is the one
Ketter wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

from ketter.store.models import Job
from tests.integration.jobs.test_source_versions import BIG, Bench, once
from tests.integration.jobs.test_source_versions import bench as bench  # the fixture

ATTACKER = b"ATTACKER CONTENT"


def _part(folder: Path) -> Path:
    (name,) = [n for n in os.listdir(folder) if n.endswith(".part")]
    return folder / name


def test_part_swapped_mid_copy_is_never_delivered_and_the_source_kept(bench: Bench) -> None:
    src = bench.root / "in" / "move" / "plate.mov"
    data = os.urandom(1 << 20) * (BIG >> 20)
    src.write_bytes(data)
    job_id = bench.submit("move", src)
    out = bench.root / "out" / "move"
    ours: list[int] = []

    def swap() -> None:
        part = _part(out)
        ours.append(part.stat().st_ino)
        part.rename(out / "moved-away.bin")
        part.write_bytes(ATTACKER)

    bench.hooks.append(once(swap))
    job = bench.run(job_id)
    assert ours, "the copy reported no progress"
    assert job.state == "failed", (job.state, job.error)
    assert "replaced by another file" in (job.error or "")
    assert not (out / "plate.mov").exists(), "the impostor was delivered as verified"
    assert src.read_bytes() == data  # the move kept its source
    assert any(kind == "job_failed" for kind, _ in bench.alerts.sent), bench.alerts.sent
    recorded = Job.get_by_id(job_id).placed_inode
    assert recorded in (None, ours[0]), "the impostor's inode was recorded as the temporary's"
