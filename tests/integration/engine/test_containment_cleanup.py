"""Rollback, the orphan sweep, the ``skip_identical`` comparison and folder
metadata never reach anything outside a destination root through a link
(issue #14 finding 1, second round: the sweep and rollback followed a planted
``.old`` link; an identical file behind a swapped folder was accepted).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ketter.engine import TransferContext
from ketter.engine.beneath import make_dirs
from ketter.engine.cleanup import find_orphans, remove_path, rollback
from ketter.engine.placement import place
from ketter.engine.source import inspect_source
from ketter.engine.spec import TransferSpec
from ketter.engine.transfer import identical_result
from ketter.errors import DestinationLinkError, TransientError

from .helpers import read, snapshot, write
from .workers_bench import Workers


@pytest.fixture
def victim(bt: bytes) -> bytes:
    """A folder outside the destination root holding Ketter-like state."""
    os.mkdir(bt + b"/victim")
    write(bt + b"/victim/ketter.db", b"the job store")
    write(bt + b"/victim/audit.jsonl", b"the audit log")
    return bt + b"/victim"


def test_orphan_sweep_never_follows_a_planted_old_link(bt: bytes, victim: bytes) -> None:
    """Before the fix the sweep deleted victim/ketter.db (its name was taken
    in dst/sub) and moved victim/audit.jsonl into dst/sub."""
    write(bt + b"/dst/sub/ketter.db", b"a file in the route")
    os.symlink(victim, bt + b"/dst/sub/.ketter-999999-x.old")
    before = snapshot(victim)
    found = find_orphans(bt + b"/dst", lambda job: False)
    assert found == [bt + b"/dst/sub/.ketter-999999-x.old"]
    assert snapshot(victim) == before
    assert read(victim + b"/ketter.db") == b"the job store"
    assert sorted(os.listdir(bt + b"/dst/sub")) == [b"ketter.db"]  # the link itself went


def test_rollback_never_follows_a_planted_old_link(bt: bytes, victim: bytes) -> None:
    write(bt + b"/dst/ketter.db", b"a file in the route")
    os.symlink(victim, bt + b"/dst/.ketter-7-a-ketter.db.old")
    before = snapshot(victim)
    rollback(bt + b"/dst", TransferContext("7", "a").job_prefix)
    assert snapshot(victim) == before
    assert not os.path.lexists(bt + b"/dst/.ketter-7-a-ketter.db.old")


def test_rollback_from_the_root_never_enters_a_folder_swapped_for_a_link(
    bt: bytes, victim: bytes
) -> None:
    """``finish_rollback`` passes the route root: a destination folder
    swapped for a link is not rolled back through it."""
    os.mkdir(bt + b"/dst/sub")
    write(victim + b"/.ketter-7-a-take.mov.part", b"not ours")
    os.rmdir(bt + b"/dst/sub")
    os.symlink(victim, bt + b"/dst/sub")
    before = snapshot(victim)
    assert rollback(bt + b"/dst/sub", "7", root=bt + b"/dst") == []
    assert snapshot(victim) == before


def test_a_real_old_folder_is_still_restored(bt: bytes) -> None:
    """The descriptor-relative restore keeps the old behaviour for Ketter's
    own set-aside versions, read-only sub-folders included."""
    write(bt + b"/dst/.ketter-4-a-reel.old/reel/sub/f.exr", b"old frame")
    os.chmod(bt + b"/dst/.ketter-4-a-reel.old/reel/sub", 0o500)
    write(bt + b"/dst/.ketter-4-a-take.mov.old/take.mov", b"old take")
    write(bt + b"/dst/take.mov", b"new take")  # placed: the old one goes
    rollback(bt + b"/dst", "4")
    assert read(bt + b"/dst/reel/sub/f.exr") == b"old frame"
    assert read(bt + b"/dst/take.mov") == b"new take"
    assert sorted(os.listdir(bt + b"/dst")) == [b"reel", b"take.mov"]


def test_remove_path_leaves_link_targets_alone(bt: bytes, victim: bytes) -> None:
    os.chmod(victim, 0o555)
    write(bt + b"/dst/.ketter-4-a-reel.dir/deep/f", b"x")
    os.chmod(bt + b"/dst/.ketter-4-a-reel.dir/deep", 0o500)
    os.symlink(victim, bt + b"/dst/.ketter-4-a-reel.dir/deep/l")
    os.symlink(victim + b"/ketter.db", bt + b"/dst/.ketter-4-a-reel.dir/f")
    before = snapshot(victim)
    remove_path(bt + b"/dst/.ketter-4-a-reel.dir")
    assert not os.path.lexists(bt + b"/dst/.ketter-4-a-reel.dir")
    assert snapshot(victim) == before
    assert os.stat(victim).st_mode & 0o777 == 0o555
    os.chmod(victim, 0o755)


def _identical_setup(bt: bytes) -> tuple[TransferSpec, bytes, bytes]:
    """A move route under skip_identical; an identical copy of the source
    sits in a folder outside the route."""
    write(bt + b"/src/take.mov", b"the only take" * 1000)
    write(bt + b"/elsewhere/take.mov", b"the only take" * 1000)
    spec = TransferSpec(destination_root=bt + b"/dst", conflict="skip_identical", mode="move")
    make_dirs(spec.destination_root, bt + b"/dst/sub")
    return spec, bt + b"/src/take.mov", bt + b"/dst/sub/take.mov"


def _swap_for_link(bt: bytes) -> None:
    os.rename(bt + b"/dst/sub", bt + b"/dst/sub-real")
    os.symlink(bt + b"/elsewhere", bt + b"/dst/sub")


def test_skip_identical_never_compares_through_a_link(bt: bytes) -> None:
    """Before the fix the identical copy behind the link was accepted and
    the move deleted the source while the only copy sat outside the route."""
    spec, src, final = _identical_setup(bt)
    _swap_for_link(bt)
    plan = inspect_source(spec, src)
    with pytest.raises(DestinationLinkError):
        identical_result(spec, plan, final, ctx=TransferContext())
    assert os.path.exists(src)


def test_skip_identical_swapped_after_the_comparison_is_not_placed(bt: bytes) -> None:
    spec, src, final = _identical_setup(bt)
    write(bt + b"/dst/sub/take.mov", b"the only take" * 1000)
    plan = inspect_source(spec, src)
    ctx = TransferContext()
    result = identical_result(spec, plan, final, ctx=ctx)
    assert result is not None and result.skipped
    _swap_for_link(bt)
    with pytest.raises(DestinationLinkError):
        place(spec, result, ctx)
    assert os.path.exists(src)


def test_skip_identical_replaced_after_the_comparison_is_not_placed(bt: bytes) -> None:
    """The name no longer holds the inode that was hashed."""
    spec, src, final = _identical_setup(bt)
    write(final, b"the only take" * 1000)
    plan = inspect_source(spec, src)
    ctx = TransferContext()
    result = identical_result(spec, plan, final, ctx=ctx)
    assert result is not None
    write(bt + b"/dst/sub/new", b"something else")  # a new inode while the old one lives
    os.rename(bt + b"/dst/sub/new", final)
    with pytest.raises(TransientError, match="replaced after it was compared"):
        place(spec, result, ctx)
    assert os.path.exists(src)


def test_per_file_folder_never_written_through_a_link_swapped_for_the_folder(
    bt: bytes, victim: bytes, workers: Callable[..., Workers]
) -> None:
    """Before the fix the folder modes went to the link's target: a state
    folder outside the route became world-writable. The workers make one
    job per file of a ``per_file`` folder: the folder swapped for a link
    between two of them fails the second (nothing written, no mode changed,
    through the link), and the source is kept."""
    write(bt + b"/src/show/logs/a.txt", b"a")
    # Past the batch size: b's job runs on its own, after a's.
    write(bt + b"/src/show/logs/b.txt", b"b" * (5 << 20))
    os.chmod(bt + b"/src/show/logs", 0o777)
    os.mkdir(victim + b"/logs", 0o700)
    w = workers()
    first, second = w.submit("r", bt + b"/src/show")
    assert w.run(first).state == "completed"
    os.rename(bt + b"/dst/show", bt + b"/dst/show-real")
    os.symlink(victim, bt + b"/dst/show")
    job = w.run(second)
    assert job.state == "failed", (job.state, job.error)
    assert "symbolic link" in (job.error or "")
    assert os.stat(victim + b"/logs").st_mode & 0o777 == 0o700
    assert os.listdir(victim + b"/logs") == []
    assert os.path.exists(bt + b"/src/show/logs/a.txt")
    assert os.path.exists(bt + b"/src/show/logs/b.txt")
