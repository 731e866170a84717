"""Conflict policies, forced placement fallbacks and the conflict race."""

from __future__ import annotations

import os

import pytest

from ketter.engine import (
    TransferContext,
    TransferSpec,
    check_existing,
    copy_and_verify,
    inspect_source,
    place,
    placement_mode,
    resolve_destination,
    transfer,
)
from ketter.errors import DestinationConflict

from .helpers import RecordingContext, ketter_names, read, write

MODES = ["renameat2", "link", "rename"]


@pytest.fixture(params=MODES)
def forced(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KETTER_PLACEMENT", request.param)
    return str(request.param)


def test_probe_picks_renameat2_on_ext4(bt: bytes) -> None:
    assert placement_mode(bt + b"/dst", False) == "renameat2"
    assert placement_mode(bt + b"/dst", True) == "renameat2"
    assert ketter_names(bt) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_fail_policy_never_overwrites(bt: bytes, forced: str, kind: str) -> None:
    src = bt + b"/src/item"
    if kind == "file":
        write(src, b"new")
        write(bt + b"/dst/item", b"old")
    else:
        write(src + b"/a", b"new")
        write(bt + b"/dst/item/a", b"old")
    spec = TransferSpec(folders="as_unit")
    with pytest.raises(DestinationConflict):
        transfer(spec, src, bt + b"/dst", TransferContext())
    path = bt + b"/dst/item" + (b"" if kind == "file" else b"/a")
    assert read(path) == b"old"
    assert ketter_names(bt) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_each_mode_places_and_reports(bt: bytes, forced: str, kind: str) -> None:
    src = bt + b"/src/item.ext"
    write(src if kind == "file" else src + b"/a", b"data")
    out = transfer(TransferSpec(folders="as_unit"), src, bt + b"/dst", TransferContext())
    expect = "rename" if (forced == "link" and kind == "folder") else forced
    assert out.placements[0].mode == expect


def test_rename_policy_numbers_names(bt: bytes) -> None:
    write(bt + b"/src/take.mov", b"new")
    write(bt + b"/dst/take.mov", b"old")
    write(bt + b"/dst/take (1).mov", b"old1")
    out = transfer(
        TransferSpec(conflict="rename"), bt + b"/src/take.mov", bt + b"/dst", TransferContext()
    )
    assert out.final_path == bt + b"/dst/take (2).mov"
    assert read(bt + b"/dst/take.mov") == b"old"


def test_skip_identical_touches_nothing(bt: bytes) -> None:
    write(bt + b"/src/a", b"same", mtime_ns=10**18)
    write(bt + b"/dst/a", b"same", mtime_ns=5 * 10**17)
    before = os.stat(bt + b"/dst/a")
    spec = TransferSpec(conflict="skip_identical")
    plan = inspect_source(spec, bt + b"/src/a")
    assert check_existing(spec, plan, bt + b"/dst/a") == "identical"
    out = transfer(spec, bt + b"/src/a", bt + b"/dst", TransferContext())
    after = os.stat(bt + b"/dst/a")
    assert out.placements[0].skipped
    assert out.results[0].hashes["sha256"]
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    write(bt + b"/src/b", b"new!")
    write(bt + b"/dst/b", b"old!")
    assert check_existing(spec, inspect_source(spec, bt + b"/src/b"), bt + b"/dst/b") == "different"
    with pytest.raises(DestinationConflict):
        transfer(spec, bt + b"/src/b", bt + b"/dst", TransferContext())
    assert read(bt + b"/dst/b") == b"old!"


def test_skip_identical_move_deletes_the_source(bt: bytes) -> None:
    write(bt + b"/src/a", b"same")
    write(bt + b"/dst/a", b"same")
    transfer(
        TransferSpec(mode="move", conflict="skip_identical"),
        bt + b"/src/a",
        bt + b"/dst",
        TransferContext(),
    )
    assert not os.path.exists(bt + b"/src/a")


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_overwrite_replaces_after_the_new_one_is_in_place(bt: bytes, kind: str) -> None:
    src = bt + b"/src/x"
    write(src if kind == "file" else src + b"/n", b"new")
    write(bt + b"/dst/x" + (b"" if kind == "file" else b"/o"), b"old")
    seen = []

    def at(point: str) -> None:
        if point == "after-place":  # new in place, old still set aside
            seen.append(sorted(os.listdir(bt + b"/dst")))

    out = transfer(
        TransferSpec(conflict="overwrite", folders="as_unit"),
        src,
        bt + b"/dst",
        RecordingContext("7", "c", on_fault=at),
    )
    assert out.placements[0].replaced
    assert seen == [[b".ketter-7-c-x.old", b"x"]]
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
    created = []

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
    bt: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KETTER_PLACEMENT", "rename")
    write(bt + b"/src/d/a", b"ours")

    def other_writer(point: str) -> None:
        if point == "before-rename":
            write(bt + b"/dst/d/theirs", b"theirs")

    with pytest.raises(DestinationConflict):
        transfer(
            TransferSpec(folders="as_unit"),
            bt + b"/src/d",
            bt + b"/dst",
            RecordingContext(on_fault=other_writer),
        )
    assert os.listdir(bt + b"/dst/d") == [b"theirs"]
    assert ketter_names(bt) == []
