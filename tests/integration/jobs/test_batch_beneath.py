"""The batch's one flush per destination folder reaches that folder from the
route root without following a link (issue #14 finding 1, review).

The batch renames its small files into their folder, then flushes each
folder once before recording the jobs completed. By name, a folder swapped
for a link between the renames and the flush made Ketter flush the link's
target and record as durable renames it never flushed. The swap is made
right before the batch's flush, in process (the flush step is wrapped, not
replaced: the real one runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketter.jobs import batch as batch_mod
from ketter.store.models import Job
from tests.integration.jobs.inprocess import in_process_route


def test_batch_flush_does_not_follow_a_folder_swapped_for_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with in_process_route(tmp_path) as route:
        (tmp_path / "out" / "sub").mkdir()
        ids = route.submit("sub/a.wav", "sub/b.wav")
        real_flush = batch_mod.Batch._flush_dirs
        flushed: list[set[bytes]] = []

        def swap_then_flush(self: batch_mod.Batch, dirs: set[bytes]) -> None:
            flushed.append(set(dirs))
            os.rename(tmp_path / "out" / "sub", tmp_path / "out" / "sub.moved-away")
            os.symlink(outside, tmp_path / "out" / "sub")
            real_flush(self, dirs)

        monkeypatch.setattr(batch_mod.Batch, "_flush_dirs", swap_then_flush)
        route.runner().handle(ids[0])
        assert flushed == [{os.fsencode(tmp_path / "out" / "sub")}], "no batch flush ran"
        states = {i: Job.get_by_id(i).state for i in ids}
        assert "completed" not in states.values(), states
        errors = [Job.get_by_id(i).error or "" for i in ids]
        assert all("symbolic link" in e for e in errors), errors
        assert os.listdir(outside) == []
