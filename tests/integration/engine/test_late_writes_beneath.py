"""What Ketter writes late in a folder job never goes through a link planted
in the destination meanwhile (issue #14 finding 1, review of the remaining
path-based spots).

The destination folder (or the ``.dir`` itself) is swapped for a link while
the job runs; the writes that come after the copy — the package's ``.dir``,
the probe files of the placement mode, the ASC MHL generation — must be made
below the folder reached from the route root (or through Ketter's own
descriptor), never in the link's target. The target's mtime is set to 0
first: creating *and removing* an entry there would still move it.
"""

from __future__ import annotations

import os

import pytest

from ketter.engine import TransferContext, TransferSpec, copy_and_verify, inspect_source
from ketter.engine import placement as placement_mod
from ketter.errors import PermanentError, TemporarySwapped

from .helpers import RecordingContext, write


def _outside(bt: bytes) -> bytes:
    out = bt + b"/outside"
    os.mkdir(out)
    os.utime(out, ns=(0, 0))
    return out


def _untouched(out: bytes) -> None:
    assert os.listdir(out) == [], "something was written through the link"
    assert os.stat(out).st_mtime_ns == 0, "an entry was created (and removed) through the link"


def test_package_dir_is_not_made_through_a_link_swapped_during_the_zip(bt: bytes) -> None:
    """The package path makes its ``.dir`` only after the whole zip write:
    a destination folder swapped for a link during that write must fail the
    job, not get the ``.dir`` (and the extracted members) in the target."""
    spec = TransferSpec(folders="as_unit", package_min_files=1, destination_root=bt + b"/dst")
    write(bt + b"/src/shot/a.dpx", b"frame a" * 100)
    write(bt + b"/src/shot/b.dpx", b"frame b" * 100)
    os.mkdir(bt + b"/dst/sub")
    out = _outside(bt)
    plan = inspect_source(spec, bt + b"/src/shot")

    def hook(point: str) -> None:
        if point == "mid-copy":
            os.rename(bt + b"/dst/sub", bt + b"/dst/sub.moved-away")
            os.symlink(out, bt + b"/dst/sub")

    with pytest.raises(PermanentError):
        copy_and_verify(spec, plan, bt + b"/dst/sub/shot", RecordingContext(on_fault=hook))
    _untouched(out)


@pytest.mark.parametrize("swap", ["folder-of-links", "link"])
def test_mhl_is_not_written_through_a_swapped_dir(bt: bytes, swap: str) -> None:
    """The ``.dir`` swapped after its copy, before its MHL, for a folder
    whose ``ascmhl`` is a link out of the route (or for a link itself): the
    generation is refused (:class:`TemporarySwapped` / a link error) and no
    MHL file lands in the link's target."""
    from ketter.audit.mhl import write_mhl_generation

    spec = TransferSpec(folders="as_unit", destination_root=bt + b"/dst")
    write(bt + b"/src/A001/C001.mov", b"frame a" * 100)
    out = _outside(bt)
    plan = inspect_source(spec, bt + b"/src/A001")
    result = copy_and_verify(spec, plan, bt + b"/dst/A001", TransferContext())
    tmp = result.temp_path
    os.rename(tmp, tmp + b".moved-away")
    if swap == "link":
        os.symlink(out, tmp)
    else:
        os.mkdir(tmp)
        os.symlink(out, tmp + b"/ascmhl")
    with pytest.raises(PermanentError) as info:
        write_mhl_generation(tmp, bt + b"/src/A001", result, now=1e9, node="n")
    if swap == "folder-of-links":
        assert isinstance(info.value, TemporarySwapped)
    _untouched(out)


def test_mhl_of_an_untouched_dir_is_written_below_it(bt: bytes) -> None:
    """The same call on the ``.dir`` the copy made writes the generation
    there and names it under the ``.dir``'s path."""
    from ketter.audit.mhl import write_mhl_generation

    spec = TransferSpec(folders="as_unit", destination_root=bt + b"/dst")
    write(bt + b"/src/A001/C001.mov", b"frame a" * 100)
    plan = inspect_source(spec, bt + b"/src/A001")
    result = copy_and_verify(spec, plan, bt + b"/dst/A001", TransferContext())
    path = write_mhl_generation(
        result.temp_path, bt + b"/src/A001", result, now=1e9, node="n", root=bt + b"/dst"
    )
    assert path.startswith(result.temp_path + b"/ascmhl/0001_A001_")
    assert os.path.isfile(path)


def test_placement_probe_stays_in_the_folder_reached(
    bt: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``place`` probes the filesystem through the destination folder's
    descriptor it reached from the root: the folder's name swapped for a
    link meanwhile gets no probe file created or renamed in its target."""
    monkeypatch.setattr(placement_mod, "_probe_cache", {})
    os.mkdir(bt + b"/dst/sub")
    out = _outside(bt)
    fd = os.open(bt + b"/dst/sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(bt + b"/dst/sub", bt + b"/dst/sub.moved-away")
        os.symlink(out, bt + b"/dst/sub")
        for is_dir in (False, True):
            assert placement_mod.placement_mode(bt + b"/dst/sub", is_dir, fd) == "renameat2"
    finally:
        os.close(fd)
    _untouched(out)
    assert os.listdir(bt + b"/dst/sub.moved-away") == [], "a probe file was left behind"
