"""The engine never writes through a symbolic link in a destination tree
(issue #14 finding 1) and ``conflict: overwrite`` replaces a link, or a
folder holding links, as links: never their targets (finding 13).

The transfers run through the workers' path (:mod:`.workers_bench`); the
same with real worker processes is covered by
``tests/integration/jobs/test_destination_links.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest

from ketter.engine import TransferContext
from ketter.engine.beneath import make_dirs, open_dir
from ketter.engine.placement import place
from ketter.engine.source import inspect_source
from ketter.engine.spec import TransferSpec
from ketter.engine.transfer import copy_and_verify
from ketter.errors import DestinationLinkError

from .helpers import read, snapshot, write
from .workers_bench import Workers, events


def _spec(bt: bytes, **kw: object) -> TransferSpec:
    return TransferSpec(destination_root=bt + b"/dst", **kw)  # type: ignore[arg-type]


@pytest.fixture
def outside(bt: bytes) -> bytes:
    """A folder outside every root, holding a file a link could hit."""
    os.mkdir(bt + b"/elsewhere")
    write(bt + b"/elsewhere/victim.txt", b"precious")
    return bt + b"/elsewhere"


@pytest.mark.parametrize("conflict", ["fail", "overwrite", "rename"])
def test_per_file_folder_through_a_planted_link_fails(
    bt: bytes, outside: bytes, conflict: str, workers: Callable[..., Workers]
) -> None:
    """Each file's job fails for good (DestinationLinkError is permanent)."""
    write(bt + b"/src/show/sub/evil.txt", b"attacker")
    write(bt + b"/src/show/sub/victim.txt", b"attacker")
    os.mkdir(bt + b"/dst/show")
    os.symlink(outside, bt + b"/dst/show/sub")
    before = snapshot(outside)
    jobs = workers(conflict=conflict).transfer("r", bt + b"/src/show")
    assert len(jobs) == 2
    for job in jobs:
        assert job.state == "failed", (job.state, job.error)
        assert re.search(r"'sub' under .*show' is a symbolic link", job.error or ""), job.error
    assert snapshot(outside) == before
    assert read(outside + b"/victim.txt") == b"precious"
    assert os.path.islink(bt + b"/dst/show/sub")


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("when", ["before_copy", "before_place"])
def test_a_link_swapped_in_after_validation_is_refused(
    bt: bytes, outside: bytes, kind: str, when: str
) -> None:
    """The parent is checked again before a temporary is written, and the
    final rename is done relative to a folder reached without links."""
    write(bt + b"/src/reel/take.mov", b"x" * 1000)
    spec = _spec(bt, folders="as_unit", conflict="overwrite")
    plan = inspect_source(spec, bt + b"/src/reel" + (b"/take.mov" if kind == "file" else b""))
    final = bt + b"/dst/a/" + plan.name
    make_dirs(spec.destination_root, bt + b"/dst/a")
    ctx = TransferContext()

    def swap() -> None:
        os.rename(bt + b"/dst/a", bt + b"/dst/a-real")
        os.symlink(outside, bt + b"/dst/a")

    if when == "before_copy":
        swap()
        with pytest.raises(DestinationLinkError):
            copy_and_verify(spec, plan, final, ctx)
    else:
        result = copy_and_verify(spec, plan, final, ctx)
        swap()
        with pytest.raises(DestinationLinkError):
            place(spec, result, ctx)
        # Nothing placed anywhere; the temporary stays in the real folder
        # (moved away by the attacker) for the orphan sweep.
        assert not os.path.lexists(bt + b"/dst/a-real/" + plan.name)
        assert not os.path.lexists(outside + b"/" + plan.name)
    assert os.listdir(outside) == [b"victim.txt"]


def test_walk_refuses_a_link_and_creates_real_folders(bt: bytes, outside: bytes) -> None:
    make_dirs(bt + b"/dst", bt + b"/dst/x/y/z")
    assert os.path.isdir(bt + b"/dst/x/y/z") and not os.path.islink(bt + b"/dst/x")
    os.symlink(outside, bt + b"/dst/x/y/l")
    with pytest.raises(DestinationLinkError, match=r"'l' under '.*/dst/x/y'"):
        make_dirs(bt + b"/dst", bt + b"/dst/x/y/l/new")
    assert not os.path.exists(outside + b"/new")
    with pytest.raises(DestinationLinkError):
        open_dir(bt + b"/dst", bt + b"/dst/x/y/l")


def test_overwrite_replaces_a_link_to_a_file_not_its_target(
    bt: bytes, outside: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/take.mov", b"new take")
    os.symlink(outside + b"/victim.txt", bt + b"/dst/take.mov")
    (job,) = workers(conflict="overwrite").transfer("r", bt + b"/src/take.mov")
    assert job.state == "completed", job.error
    assert not os.path.islink(bt + b"/dst/take.mov")
    assert read(bt + b"/dst/take.mov") == b"new take"
    assert read(outside + b"/victim.txt") == b"precious"


@pytest.mark.parametrize("how", ["link_is_the_destination", "destination_holds_a_link"])
def test_overwrite_over_links_to_folders_as_unit(
    bt: bytes, outside: bytes, how: str, workers: Callable[..., Workers]
) -> None:
    """Finding 13: this failed with 'unexpected error: NotImplementedError'."""
    write(bt + b"/src/reel/a.exr", b"frame a")
    write(bt + b"/src/reel/sub/b.exr", b"frame b")
    if how == "link_is_the_destination":
        os.symlink(outside, bt + b"/dst/reel")
    else:
        write(bt + b"/dst/reel/old.exr", b"old")
        os.symlink(outside, bt + b"/dst/reel/linked")
        os.mkdir(bt + b"/dst/reel/deep")
        os.symlink(outside, bt + b"/dst/reel/deep/linked")
    before = snapshot(outside)
    (job,) = workers(conflict="overwrite", folders="as_unit").transfer("r", bt + b"/src/reel")
    assert job.state == "completed", job.error
    (placed,) = [details for name, details in events(job.id) if name == "place"]
    assert placed["replaced"]
    assert not os.path.islink(bt + b"/dst/reel")
    assert sorted(os.listdir(bt + b"/dst/reel")) == [b"a.exr", b"ascmhl", b"sub"] or sorted(
        os.listdir(bt + b"/dst/reel")
    ) == [b"a.exr", b"sub"]
    assert read(bt + b"/dst/reel/sub/b.exr") == b"frame b"
    assert snapshot(outside) == before
    assert [n for n in os.listdir(bt + b"/dst") if n.startswith(b".ketter-")] == []


def test_overwrite_per_file_over_a_link_to_a_folder(
    bt: bytes, outside: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/take.mov", b"new take")
    os.symlink(outside, bt + b"/dst/take.mov")
    (job,) = workers(conflict="overwrite").transfer("r", bt + b"/src/take.mov")
    assert job.state == "completed", job.error
    assert read(bt + b"/dst/take.mov") == b"new take"
    assert os.listdir(outside) == [b"victim.txt"]
