"""The engine's warnings of a job run by the workers reach the audit chain
and the service log.

``JobRunner.start`` built the job's context without ``on_warning``, so a
symlink skipped in a source folder, an adopted partial, a folder's metadata
not applied … left no event and no log line at all. Each is now a
``warning`` event of the job (``details.warning`` names it) and a WARNING
line, through the workers' own path (:mod:`.workers_bench`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest

from .workers_bench import Workers, events


def test_a_symlink_skipped_in_an_as_unit_folder_is_a_warning_event_and_line(
    bt: bytes, workers: Callable[..., Workers], caplog: pytest.LogCaptureFixture
) -> None:
    reel = bt + b"/src/reel"
    os.makedirs(reel + b"/sub")
    with open(reel + b"/take.mov", "wb") as f:
        f.write(b"m" * 5000)
    with open(reel + b"/sub/take.wav", "wb") as f:
        f.write(b"w" * 3000)
    os.symlink(b"/etc/hostname", reel + b"/sub/linked")
    w = workers(folders="as_unit", package_min_files=0)
    with caplog.at_level(logging.WARNING, logger="ketter.jobs"):
        (job,) = w.transfer("r", reel)
    assert job.state == "completed", job
    assert os.path.exists(bt + b"/dst/reel/sub/take.wav")
    assert not os.path.lexists(bt + b"/dst/reel/sub/linked")  # skipped, as documented
    warned = [d for name, d in events(job.id) if name == "warning"]
    assert len(warned) == 1, events(job.id)
    assert warned[0]["warning"] == "skip"
    assert warned[0]["path"] == "sub/linked"
    assert "link" in warned[0]["reason"], warned[0]
    lines = [r for r in caplog.records if getattr(r, "ketter.warning", None) == "skip"]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].levelno == logging.WARNING
    assert getattr(lines[0], "ketter.job_id") == job.id
    assert "sub/linked" in lines[0].getMessage()
