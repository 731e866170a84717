"""The ASC MHL generation of a delivered folder is named in its ``place``
event (issue #15, MHL): its formats, and the names not valid UTF-8 that the
manifest leaves out with the ignore patterns that name them, so the audit
chain says what the manifest does not cover."""

from __future__ import annotations

import os
from collections.abc import Callable

from ketter.paths import readable

from .helpers import write
from .workers_bench import Workers, events


def test_place_event_names_what_the_generation_leaves_out(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/A001/A001C001.mov", os.urandom(4000))
    bad = b"sound/\xff take.wav"
    write(bt + b"/src/A001/" + bad, os.urandom(300))
    (job,) = workers(folders="as_unit", mhl=True).transfer("r", bt + b"/src/A001")
    assert job.state == "completed", job.error
    mhl = dict(events(job.id))["place"]["mhl"]
    assert mhl["left_out"] == [readable(bad)]
    assert mhl["patterns"] and all(isinstance(p, str) for p in mhl["patterns"])
    assert {"xxh64", "xxh128"} <= set(mhl["formats"])
    assert mhl["computed"] == []
    (generation,) = [n for n in os.listdir(bt + b"/dst/A001/ascmhl") if n.endswith(b".mhl")]
    assert mhl["generation"] == readable(generation)


def test_place_event_of_a_clean_folder_leaves_nothing_out(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/A002/A002C001.mov", os.urandom(4000))
    (job,) = workers(folders="as_unit", mhl=True, mode="move").transfer("r", bt + b"/src/A002")
    assert job.state == "completed", job.error
    mhl = dict(events(job.id))["place"]["mhl"]
    assert mhl["left_out"] == [] and mhl["patterns"] == []
    assert mhl["generation"].startswith("0001_A002_")
