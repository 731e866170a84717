"""One contract, run for copy and move over files and every folder mode."""

from __future__ import annotations

import os

import pytest

from ketter.engine import (
    TransferContext,
    TransferSpec,
    copy_and_verify,
    delete_source,
    inspect_source,
    place,
    resolve_destination,
    transfer,
)
from ketter.engine.hashing import MultiHash

from .helpers import ODD_NAMES, ketter_names, snapshot, write

FOLDER_MODES = [
    pytest.param({"folders": "as_unit", "package_min_files": 0}, id="as_unit"),
    pytest.param({"folders": "as_unit", "package_min_files": 3}, id="packaged"),
    pytest.param({"folders": "per_file"}, id="per_file"),
]


def make_folder(root: bytes) -> None:
    for i, name in enumerate(ODD_NAMES):
        write(
            root + b"/" + name,
            name * (i + 1),
            mtime_ns=1_000_000_123 * (i + 1),
            mode=0o640 if i % 2 else 0o600,
        )
    write(root + b"/sub dir/deeper/\xff.bin", os.urandom(3 * 1024 * 1024), mode=0o444)
    os.makedirs(root + b"/empty folder")
    os.utime(root + b"/sub dir", ns=(5, 5))


@pytest.mark.parametrize("mode", ["copy", "move"])
class TestContract:
    def test_file(self, bt: bytes, mode: str) -> None:
        src = bt + b"/src/" + "caf\u00e9 \xff".encode("utf-8", "surrogateescape")
        data = os.urandom(5 * 1024 * 1024 + 17)
        write(src, data, mtime_ns=123_456_789_012, mode=0o640)
        before = snapshot(src)
        spec = TransferSpec(mode=mode, checkpoint_bytes=1024 * 1024)  # type: ignore[arg-type]
        out = transfer(spec, src, bt + b"/dst", TransferContext())
        final = bt + b"/dst/" + os.path.basename(src)
        assert out.final_path == final
        assert snapshot(final) == before
        mh = MultiHash(("sha256", "xxh128", "xxh64"))
        mh.update(data)
        assert out.results[0].hashes == mh.hexdigests()
        assert os.path.exists(src) == (mode == "copy")
        assert ketter_names(bt) == []

    @pytest.mark.parametrize("folder", FOLDER_MODES)
    def test_folder(self, bt: bytes, mode: str, folder: dict[str, object]) -> None:
        src = bt + b"/src/show \xe9p01"
        make_folder(src)
        before = snapshot(src)
        spec = TransferSpec(mode=mode, **folder)  # type: ignore[arg-type]
        ctx = TransferContext()
        out = transfer(spec, src, bt + b"/dst", ctx)
        final = bt + b"/dst/show \xe9p01"
        after = snapshot(final)
        assert after == before
        files = [r for r in out.results]
        if folder["folders"] == "as_unit":
            assert [f.relpath for f in files[0].files] == [e.relpath for e in out.plan.files]
            assert files[0].packaged == (folder.get("package_min_files") == 3)
        else:
            assert len(files) == len(out.plan.files)
        assert os.path.exists(src) == (mode == "copy")
        if mode == "move":
            assert os.listdir(bt + b"/src") == []
        assert ketter_names(bt) == []

    def test_steps_one_by_one(self, bt: bytes, mode: str) -> None:
        src = bt + b"/src/a.mov"
        write(src, b"x" * 1000)
        spec = TransferSpec(mode=mode)  # type: ignore[arg-type]
        ctx = TransferContext("42", "c1")
        plan = inspect_source(spec, src)
        final = resolve_destination(spec, plan, bt + b"/dst")
        result = copy_and_verify(spec, plan, final, ctx)
        assert os.path.basename(result.temp_path) == b".ketter-42-c1-a.mov.part"
        assert not os.path.exists(final)  # nothing under the final name before place()
        p = place(spec, result, ctx)
        assert (p.final_path, p.skipped) == (final, False)
        assert os.stat(final).st_ino == p.ino
        if mode == "move":
            res = delete_source(spec, plan, p, ctx)
            assert res.deleted == [src]
            again = delete_source(spec, plan, p, ctx)  # idempotent
            assert again.already_gone == [src]
        assert os.path.exists(src) == (mode == "copy")


def test_move_keeps_a_source_changed_after_copy(bt: bytes) -> None:
    src = bt + b"/src/a"
    write(src, b"one")
    spec = TransferSpec(mode="move")
    ctx = TransferContext()
    plan = inspect_source(spec, src)
    final = resolve_destination(spec, plan, bt + b"/dst")
    p = place(spec, copy_and_verify(spec, plan, final, ctx), ctx)
    write(src, b"changed!")
    res = delete_source(spec, plan, p, ctx)
    assert res.kept == [src] and os.path.exists(src)


def test_move_deletes_ready_marker_after_source_and_never_the_root(bt: bytes) -> None:
    root = bt + b"/src"
    write(root + b"/pkg/a", b"a")
    write(root + b"/pkg.done", b"")
    spec = TransferSpec(mode="move", folders="as_unit", ready_marker=".done", source_root=root)
    transfer(spec, root + b"/pkg", bt + b"/dst", TransferContext())
    assert os.listdir(root) == []
    assert os.path.isdir(root)
    with pytest.raises(Exception, match="route root"):
        transfer(spec, root, bt + b"/dst", TransferContext())


def test_same_fs_move_rename_moves_the_inode(bt: bytes) -> None:
    src = bt + b"/src/f"
    write(src, b"abc" * 1000)
    ino = os.stat(src).st_ino
    spec = TransferSpec(mode="move", same_fs_move="rename")
    out = transfer(spec, src, bt + b"/dst", TransferContext())
    assert os.stat(bt + b"/dst/f").st_ino == ino
    assert not os.path.exists(src)
    assert out.results[0].hashes["sha256"]
    assert out.placements[0].mode.startswith("moved")


def test_refuses_overlap_symlink_and_outside_root(bt: bytes) -> None:
    from ketter.errors import PathOutsideRoute, PermanentError

    write(bt + b"/src/d/f", b"x")
    spec = TransferSpec(folders="as_unit")
    plan = inspect_source(spec, bt + b"/src/d")
    with pytest.raises(PermanentError, match="overlap"):
        resolve_destination(spec, plan, bt + b"/src/d/inner")
    os.symlink(bt + b"/src/d/f", bt + b"/src/link")
    with pytest.raises(PermanentError, match="symbolic link"):
        inspect_source(spec, bt + b"/src/link")
    with pytest.raises(PathOutsideRoute):
        inspect_source(TransferSpec(source_root=bt + b"/dst"), bt + b"/src/d")
    with pytest.raises(PathOutsideRoute):
        resolve_destination(TransferSpec(destination_root=bt + b"/dst"), plan, bt + b"/dst/../x")
    os.link(bt + b"/src/d/f", bt + b"/dst/hard")
    fplan = inspect_source(spec, bt + b"/src/d/f")
    with pytest.raises(PermanentError, match="same file"):
        resolve_destination(spec, fplan, bt + b"/dst/hard")


def test_symlinks_in_a_source_folder_are_skipped_with_a_warning(bt: bytes) -> None:
    write(bt + b"/src/d/f", b"x")
    os.symlink(b"/etc/passwd", bt + b"/src/d/escape")
    ctx = TransferContext()
    transfer(TransferSpec(folders="as_unit"), bt + b"/src/d", bt + b"/dst", ctx)
    assert os.listdir(bt + b"/dst/d") == [b"f"]
    assert [w[0] for w in ctx.warnings] == ["source_entry_skipped"]
