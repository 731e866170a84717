"""Conflict policies, forced placement fallbacks and the conflict race.

The transfers run through the workers' path (:mod:`.workers_bench`); the
moments inside a placement are reached through the workers' fault hook
(the crash tests' ``KETTER_FAULT`` points), called in this process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest

from ketter.engine import (
    TransferSpec,
    check_existing,
    copy_and_verify,
    inspect_source,
    place,
    placement_mode,
    resolve_destination,
)
from ketter.errors import DestinationConflict
from ketter.jobs import lease

from .helpers import RecordingContext, ketter_names, read, write
from .workers_bench import Workers, events

MODES = ["renameat2", "link", "rename"]


@pytest.fixture(params=MODES)
def forced(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KETTER_PLACEMENT", request.param)
    return str(request.param)


def test_probe_picks_renameat2_on_ext4(bt: bytes) -> None:
    assert placement_mode(bt + b"/dst", False) == "renameat2"
    assert placement_mode(bt + b"/dst", True) == "renameat2"
    assert ketter_names(bt) == []


def placed(job_id: int) -> dict[str, object]:
    """The details of the job's ``place`` (or ``skip``) event."""
    (details,) = [d for e, d in events(job_id) if e in ("place", "skip")]
    return details


def at_point(monkeypatch: pytest.MonkeyPatch, point: str, action: Callable[[], None]) -> list[str]:
    """Run ``action`` when the workers' job context reaches the fault point
    ``point`` (its hook for crash tests, :func:`ketter.runtime.faults.fault`,
    called in this process instead of stopping or killing it); returns the
    points reached."""
    reached: list[str] = []

    def hook(name: str, **_: object) -> None:
        reached.append(name)
        if name == point and reached.count(name) == 1:
            action()

    monkeypatch.setattr(lease, "fault", hook)
    return reached


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_fail_policy_never_overwrites(
    bt: bytes, forced: str, kind: str, workers: Callable[..., Workers]
) -> None:
    """The job fails for good; the workers refuse at validation, before
    any copy (so before any placement mode is tried)."""
    src = bt + b"/src/item"
    if kind == "file":
        write(src, b"new")
        write(bt + b"/dst/item", b"old")
    else:
        write(src + b"/a", b"new")
        write(bt + b"/dst/item/a", b"old")
    (job,) = workers(folders="as_unit").transfer("r", src)
    assert job.state == "failed" and "already exists" in (job.error or ""), job.error
    path = bt + b"/dst/item" + (b"" if kind == "file" else b"/a")
    assert read(path) == b"old"
    assert ketter_names(bt) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_each_mode_places_and_reports(
    bt: bytes, forced: str, kind: str, workers: Callable[..., Workers]
) -> None:
    src = bt + b"/src/item.ext"
    write(src if kind == "file" else src + b"/a", b"data")
    (job,) = workers(folders="as_unit").transfer("r", src)
    assert job.state == "completed", job.error
    expect = "rename" if (forced == "link" and kind == "folder") else forced
    assert placed(job.id)["mode"] == expect


def test_rename_policy_numbers_names(bt: bytes, workers: Callable[..., Workers]) -> None:
    write(bt + b"/src/take.mov", b"new")
    write(bt + b"/dst/take.mov", b"old")
    write(bt + b"/dst/take (1).mov", b"old1")
    (job,) = workers(conflict="rename").transfer("r", bt + b"/src/take.mov")
    assert job.state == "completed", job.error
    assert job.dest_path == bt + b"/dst/take (2).mov"
    assert read(bt + b"/dst/take (2).mov") == b"new"
    assert read(bt + b"/dst/take.mov") == b"old"


def test_skip_identical_touches_nothing(bt: bytes, workers: Callable[..., Workers]) -> None:
    write(bt + b"/src/a", b"same", mtime_ns=10**18)
    write(bt + b"/dst/a", b"same", mtime_ns=5 * 10**17)
    before = os.stat(bt + b"/dst/a")
    spec = TransferSpec(conflict="skip_identical")
    plan = inspect_source(spec, bt + b"/src/a")
    assert check_existing(spec, plan, bt + b"/dst/a") == "identical"
    w = workers(conflict="skip_identical")
    (job,) = w.transfer("r", bt + b"/src/a")
    assert job.state == "completed", job.error
    after = os.stat(bt + b"/dst/a")
    names = [e for e, _ in events(job.id)]
    assert "skip" in names and "place" not in names
    assert job.sha256
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    write(bt + b"/src/b", b"new!")
    write(bt + b"/dst/b", b"old!")
    assert check_existing(spec, inspect_source(spec, bt + b"/src/b"), bt + b"/dst/b") == "different"
    (job,) = w.transfer("r", bt + b"/src/b")
    assert job.state == "failed" and "different content" in (job.error or ""), job.error
    assert read(bt + b"/dst/b") == b"old!"


def test_skip_identical_move_deletes_the_source(bt: bytes, workers: Callable[..., Workers]) -> None:
    write(bt + b"/src/a", b"same")
    write(bt + b"/dst/a", b"same")
    (job,) = workers(mode="move", conflict="skip_identical").transfer("r", bt + b"/src/a")
    assert job.state == "completed", job.error
    assert not os.path.exists(bt + b"/src/a")


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_overwrite_replaces_after_the_new_one_is_in_place(
    bt: bytes, kind: str, workers: Callable[..., Workers], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = bt + b"/src/x"
    write(src if kind == "file" else src + b"/n", b"new")
    write(bt + b"/dst/x" + (b"" if kind == "file" else b"/o"), b"old")
    w = workers(conflict="overwrite", folders="as_unit")
    seen: list[list[bytes]] = []
    # New in place, old still set aside.
    at_point(monkeypatch, "after-place", lambda: seen.append(sorted(os.listdir(bt + b"/dst"))))
    (job,) = w.transfer("r", src)
    assert job.state == "completed", job.error
    assert placed(job.id)["replaced"]
    assert len(seen) == 1 and len(seen[0]) == 2 and seen[0][1] == b"x", seen
    # The set-aside old version carries the job, the claim and the node (#18).
    assert re.fullmatch(rb"\.ketter-%d-\w+@[\w.]+-x\.old" % job.id, seen[0][0]), seen
    assert os.listdir(bt + b"/dst") == [b"x"]
    path = bt + b"/dst/x" + (b"" if kind == "file" else b"/n")
    assert read(path) == b"new"


@pytest.mark.parametrize("mode", ["renameat2", "link"])
@pytest.mark.parametrize("policy", ["fail", "rename"])
def test_race_another_writer_creates_the_name_before_our_rename(
    bt: bytes, monkeypatch: pytest.MonkeyPatch, mode: str, policy: str
) -> None:
    """The other writer's file appears between the check and the rename."""
    monkeypatch.setenv("KETTER_PLACEMENT", mode)
    write(bt + b"/src/race", b"ours")
    final = bt + b"/dst/race"
    created: list[bool] = []

    def other_writer(point: str) -> None:
        if point == "before-rename" and not created:
            created.append(True)
            write(final, b"theirs")

    spec = TransferSpec(conflict=policy)  # type: ignore[arg-type]
    ctx = RecordingContext(on_fault=other_writer)
    plan = inspect_source(spec, bt + b"/src/race")
    result = copy_and_verify(spec, plan, resolve_destination(spec, plan, bt + b"/dst"), ctx)
    if policy == "fail":
        with pytest.raises(DestinationConflict):
            place(spec, result, ctx)
        assert os.listdir(bt + b"/dst") == [b"race"]
    else:
        p = place(spec, result, ctx)
        assert p.final_path == bt + b"/dst/race (1)"
        assert read(p.final_path) == b"ours"
    assert read(final) == b"theirs"  # never overwritten
    assert ketter_names(bt) == []


def test_folder_race_with_check_then_rename_keeps_a_non_empty_folder(
    bt: bytes, monkeypatch: pytest.MonkeyPatch, workers: Callable[..., Workers]
) -> None:
    monkeypatch.setenv("KETTER_PLACEMENT", "rename")
    write(bt + b"/src/d/a", b"ours")
    w = workers(folders="as_unit")
    reached = at_point(
        monkeypatch, "before-rename", lambda: write(bt + b"/dst/d/theirs", b"theirs")
    )
    (job,) = w.transfer("r", bt + b"/src/d")
    assert "before-rename" in reached
    assert job.state == "failed", (job.state, job.error)
    assert "already exists" in (job.error or ""), job.error
    assert os.listdir(bt + b"/dst/d") == [b"theirs"]
    assert ketter_names(bt) == []
