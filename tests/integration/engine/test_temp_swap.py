"""A temporary swapped in the shared destination folder is never delivered
(issue #14, reviewer's finding 1), and no destination-side open blocks on a
FIFO put in place of a file (finding 4, destination side).

Anyone who can write in the destination folder can rename Ketter's
``.part``/``.dir`` away and put their own file or folder under its name.
Ketter keeps the (st_dev, st_ino) of what it wrote, reads it back through
its own descriptor, and places only that inode: a swapped temporary fails the
job (permanent, the source is kept) instead of being delivered as verified.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Literal

import pytest

from ketter.engine import (
    FileHashes,
    TransferContext,
    TransferSpec,
    copy_and_verify,
    delete_source,
    extract_package,
    inspect_source,
    place,
)
from ketter.engine.package import write_package
from ketter.engine.progress import Progress
from ketter.engine.verify import read_back_file
from ketter.errors import PermanentError, TemporarySwapped

from .helpers import RecordingContext, read, write

ATTACKER = b"ATTACKER CONTENT"
MODES = ["renameat2", "link", "rename"]


@pytest.fixture(params=MODES)
def forced(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KETTER_PLACEMENT", request.param)
    return str(request.param)


def _swap_file(path: bytes) -> None:
    """What a hostile user of the destination folder does: the verified
    temporary goes elsewhere, their content takes its name."""
    os.rename(path, path + b".moved-away")
    write(path, ATTACKER)


def _swap_dir(path: bytes) -> None:
    os.rename(path, path + b".moved-away")
    os.mkdir(path)
    write(path + b"/a.dpx", ATTACKER)


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_swapped_part_is_not_placed(bt: bytes, forced: str, mode: Literal["copy", "move"]) -> None:
    spec = TransferSpec(mode=mode)
    src = bt + b"/src/plate.mov"
    write(src, b"real plate " * 1000)
    plan = inspect_source(spec, src)
    ctx = TransferContext()
    result = copy_and_verify(spec, plan, bt + b"/dst/plate.mov", ctx)
    assert result.temp_id == (os.lstat(result.temp_path).st_dev, os.lstat(result.temp_path).st_ino)
    _swap_file(result.temp_path)
    with pytest.raises(TemporarySwapped, match="replaced"):
        place(spec, result, ctx)
    assert not os.path.lexists(bt + b"/dst/plate.mov")
    assert read(src) == b"real plate " * 1000  # nothing placed: the source stays


def test_part_swapped_before_the_rename_is_caught_after_it(bt: bytes, forced: str) -> None:
    """The swap lands between the last check and the rename (the
    ``before-rename`` fault point): the final name then holds the wrong
    inode; the job fails and the imposter does not stay delivered."""
    spec = TransferSpec(mode="move")
    src = bt + b"/src/plate.mov"
    write(src, b"real plate " * 1000)
    plan = inspect_source(spec, src)
    result = copy_and_verify(spec, plan, bt + b"/dst/plate.mov", TransferContext())

    def hook(point: str) -> None:
        if point == "before-rename":
            _swap_file(result.temp_path)

    with pytest.raises(TemporarySwapped):
        place(spec, result, RecordingContext(on_fault=hook))
    assert not os.path.lexists(bt + b"/dst/plate.mov")
    assert os.path.exists(src)


def test_move_of_a_swapped_part_keeps_the_source(bt: bytes) -> None:
    """Before the fix the imposter was placed, its inode recorded, and
    ``delete_source`` then found "the delivery at its placed inode" and
    deleted the source."""
    spec = TransferSpec(mode="move")
    src = bt + b"/src/plate.mov"
    write(src, b"real plate " * 1000)
    plan = inspect_source(spec, src)
    ctx = TransferContext()
    result = copy_and_verify(spec, plan, bt + b"/dst/plate.mov", ctx)
    _swap_file(result.temp_path)
    try:
        placement = place(spec, result, ctx)
    except TemporarySwapped:
        pass
    else:
        delete_source(spec, plan, placement, ctx)
    assert read(src) == b"real plate " * 1000


def test_swapped_dir_is_not_placed(bt: bytes, forced: str) -> None:
    spec = TransferSpec(folders="as_unit", mode="move")
    write(bt + b"/src/shot/a.dpx", b"frame a" * 100)
    write(bt + b"/src/shot/b.dpx", b"frame b" * 100)
    plan = inspect_source(spec, bt + b"/src/shot")
    ctx = TransferContext()
    result = copy_and_verify(spec, plan, bt + b"/dst/shot", ctx)
    assert result.temp_id is not None
    _swap_dir(result.temp_path)
    with pytest.raises(TemporarySwapped):
        place(spec, result, ctx)
    assert not os.path.lexists(bt + b"/dst/shot")
    assert read(bt + b"/src/shot/a.dpx") == b"frame a" * 100


def test_dir_swapped_during_the_copy_fails_the_copy(bt: bytes) -> None:
    """Swapped while its members are written (at the first member): the
    members' read-back checks each is the inode written, and the folder
    is the one created, so the job fails before any placement."""
    spec = TransferSpec(folders="as_unit")
    write(bt + b"/src/shot/a.dpx", b"frame a" * 100)
    write(bt + b"/src/shot/b.dpx", b"frame b" * 100)
    plan = inspect_source(spec, bt + b"/src/shot")
    tmp: list[bytes] = []

    def hook(point: str) -> None:
        if point == "mid-copy":
            (name,) = [n for n in os.listdir(bt + b"/dst") if n.endswith(b".dir")]
            tmp.append(bt + b"/dst/" + name)
            os.rename(tmp[0], tmp[0] + b".moved-away")
            os.mkdir(tmp[0])
            write(tmp[0] + b"/a.dpx", b"frame a" * 100)  # even the right bytes

    with pytest.raises(PermanentError):
        copy_and_verify(spec, plan, bt + b"/dst/shot", RecordingContext(on_fault=hook))
    assert not os.path.lexists(bt + b"/dst/shot")


def test_dir_swapped_for_one_of_links_writes_nothing_outside(bt: bytes) -> None:
    """The ``.dir`` swapped mid-copy for a folder whose ``sub`` is a link
    out of the route: the remaining members are still created below the
    folder Ketter made (reached through its descriptor), never through the
    link; the job fails and nothing lands outside."""
    spec = TransferSpec(folders="as_unit")
    write(bt + b"/src/shot/a.dpx", b"frame a" * 100)
    write(bt + b"/src/shot/sub/b.dpx", b"frame b" * 100)
    os.mkdir(bt + b"/outside")
    plan = inspect_source(spec, bt + b"/src/shot")
    assert [e.relpath for e in plan.files] == [b"a.dpx", b"sub/b.dpx"]

    def hook(point: str) -> None:
        if point == "mid-copy":
            (name,) = [n for n in os.listdir(bt + b"/dst") if n.endswith(b".dir")]
            tmp = bt + b"/dst/" + name
            os.rename(tmp, tmp + b".moved-away")
            os.mkdir(tmp)
            os.symlink(bt + b"/outside", tmp + b"/sub")

    with pytest.raises(PermanentError):
        copy_and_verify(spec, plan, bt + b"/dst/shot", RecordingContext(on_fault=hook))
    assert os.listdir(bt + b"/outside") == [], "a member was created through the link"
    assert not os.path.lexists(bt + b"/dst/shot")


def _fifo_unblocked(path: bytes, call: Callable[[], object], timeout: float = 20.0) -> object:
    """Run ``call`` in a thread; if it still runs after ``timeout`` s it is
    blocked in open() on the FIFO at ``path``: open the FIFO's write side to
    release it and fail the test."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # handed to the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(timeout)
        pytest.fail(f"blocked on the FIFO {path!r} for {timeout} s")
    return out[0]


def test_zip_swapped_for_a_fifo_does_not_hang_extraction(bt: bytes) -> None:
    spec = TransferSpec(folders="as_unit", package_min_files=1)
    write(bt + b"/src/shot/a.dpx", b"frame a" * 100)
    plan = inspect_source(spec, bt + b"/src/shot")
    zip_path = bt + b"/dst/.ketter-x-shot.zip"
    ctx = TransferContext()
    _files, _hashes, ident = write_package(spec, plan, zip_path, ctx, Progress(ctx))
    os.rename(zip_path, zip_path + b".moved-away")
    os.mkfifo(zip_path)
    os.mkdir(bt + b"/dst/target")
    got = _fifo_unblocked(
        zip_path, lambda: extract_package(zip_path, plan.files, bt + b"/dst/target", ident=ident)
    )
    assert isinstance(got, PermanentError), got


def test_zip_swapped_for_another_file_is_refused(bt: bytes) -> None:
    spec = TransferSpec(folders="as_unit", package_min_files=1)
    write(bt + b"/src/shot/a.dpx", b"frame a" * 100)
    plan = inspect_source(spec, bt + b"/src/shot")
    zip_path = bt + b"/dst/.ketter-x-shot.zip"
    ctx = TransferContext()
    _files, _hashes, ident = write_package(spec, plan, zip_path, ctx, Progress(ctx))
    os.rename(zip_path, zip_path + b".moved-away")
    os.link(zip_path + b".moved-away", zip_path + b".other")
    with open(zip_path + b".moved-away", "rb") as f:
        write(zip_path, f.read())  # the same bytes, another inode
    os.mkdir(bt + b"/dst/target")
    with pytest.raises(TemporarySwapped):
        extract_package(zip_path, plan.files, bt + b"/dst/target", ident=ident)


def test_read_back_refuses_a_fifo_and_another_inode(bt: bytes) -> None:
    fh = FileHashes(b"a.dpx", 3, {"sha256": "0" * 64})
    os.mkfifo(bt + b"/dst/a.dpx")
    got = _fifo_unblocked(
        bt + b"/dst/a.dpx",
        lambda: read_back_file(
            bt + b"/dst/a.dpx", fh, "sha256", bytearray(1 << 20), lambda n: None
        ),
    )
    assert isinstance(got, PermanentError), got
    os.unlink(bt + b"/dst/a.dpx")
    write(bt + b"/dst/a.dpx", b"abc")
    st = os.lstat(bt + b"/dst/a.dpx")
    fh = FileHashes(b"a.dpx", 3, {"sha256": "0" * 64}, ident=(st.st_dev, st.st_ino + 1))
    with pytest.raises(TemporarySwapped):
        read_back_file(bt + b"/dst/a.dpx", fh, "sha256", bytearray(1 << 20), lambda n: None)


def test_no_temporaries_left_after_a_refused_swap(bt: bytes) -> None:
    spec = TransferSpec()
    src = bt + b"/src/plate.mov"
    write(src, b"x" * 5000)
    plan = inspect_source(spec, src)
    ctx = TransferContext()
    result = copy_and_verify(spec, plan, bt + b"/dst/plate.mov", ctx)
    _swap_file(result.temp_path)
    with pytest.raises(TemporarySwapped):
        place(spec, result, ctx)
    # The imposter under the temporary name is not Ketter's to remove (it
    # is named in the error); our own temporary is where the attacker put it.
    assert read(result.temp_path) == ATTACKER
    assert not os.path.lexists(bt + b"/dst/plate.mov")


@pytest.mark.parametrize("kind", ["trailing", "direct"])
def test_read_back_goes_through_the_write_descriptor(bt: bytes, kind: str) -> None:
    """The verifiers read the inode the copy wrote (through its descriptor),
    not what the temporary's name holds once it is swapped."""
    import hashlib

    from ketter.engine.direct import DirectVerifier
    from ketter.engine.hashing import new_hasher
    from ketter.engine.verify import TrailingVerifier

    path = bt + b"/dst/.ketter-1-1-plate.mov.part"
    data = os.urandom(1 << 20)
    ofd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(ofd, data)
        os.fsync(ofd)
        _swap_file(path)
        verifier: TrailingVerifier | DirectVerifier
        if kind == "trailing":
            verifier = TrailingVerifier(path, "sha256", fd=ofd)
        else:
            try:
                verifier = DirectVerifier(path, "sha256", new_hasher("sha256"), fd=ofd)
            except OSError as exc:
                pytest.skip(f"O_DIRECT refused by this filesystem ({exc})")
        verifier.submit(0, len(data))
        assert verifier.finish() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(ofd)
