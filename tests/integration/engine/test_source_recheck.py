"""The source's final check (``check_source_final``) on real files, both
ways it looks at the name: one ``lstat`` on a local filesystem, a fresh
``open`` + ``fstat`` elsewhere (an NFS/SMB client revalidates only on an
open). Both must refuse a source replaced, modified or removed while it
was copied, and pass the one that was not touched."""

from __future__ import annotations

import os

import pytest

from ketter.engine import copyio
from ketter.engine.copyio import check_source_final, open_source
from ketter.engine.source import FileEntry, scan_tree
from ketter.errors import SourceChanged
from ketter.mounts import attributes_current
from tests.ctime import wait_past_ctime


def entry_of(folder: bytes, name: bytes) -> FileEntry:
    (e,) = [f for f in scan_tree(folder)[0] if f.relpath == name]
    return e


@pytest.fixture(params=["lstat", "reopen"])
def how(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "reopen":  # as on a network share
        monkeypatch.setattr(copyio, "attributes_current", lambda dev: False)
    return request.param


def test_the_test_folder_is_local(tmp_path: os.PathLike[str]) -> None:
    """The ``lstat`` case below really takes the local path here."""
    assert attributes_current(os.stat(tmp_path).st_dev)


@pytest.mark.parametrize("change", ["none", "replaced", "modified", "vanished"])
def test_a_source_changed_while_copied_is_refused(
    tmp_path: os.PathLike[str], how: str, change: str
) -> None:
    folder = os.fsencode(tmp_path)
    path = folder + b"/take.wav"
    with open(path, "wb") as f:
        f.write(b"A" * 4096)
    e = entry_of(folder, b"take.wav")
    fd = open_source(path, e)
    try:
        if change == "replaced":  # renamed over: the same size and mtime, another inode
            with open(path + b".new", "wb") as f:
                f.write(b"B" * 4096)
            os.utime(path + b".new", ns=(e.mtime_ns, e.mtime_ns))
            os.rename(path + b".new", path)
        elif change == "modified":  # through another descriptor: our fstat sees it
            wait_past_ctime(os.fsdecode(path))
            with open(path, "r+b") as f:
                f.write(b"X")
            os.utime(path, ns=(e.mtime_ns, e.mtime_ns))  # the ctime still moves
        elif change == "vanished":
            os.unlink(path)
        if change == "none":
            check_source_final(path, fd, e)
        else:
            with pytest.raises(SourceChanged):
                check_source_final(path, fd, e)
    finally:
        os.close(fd)
