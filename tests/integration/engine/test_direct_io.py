"""The O_DIRECT path of large files (ketter/engine/direct.py) and its fallbacks.

A source that is already in the page cache takes the buffered path (faster
there), so every test here forces the direct path by declaring the source
cold; the other engine tests, whose sources were just written, cover the
buffered path.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator

import pytest

from ketter.engine import (
    TransferContext,
    TransferSpec,
    copy_and_verify,
    copyfile,
    direct,
    inspect_source,
)
from ketter.engine.paths import temp_name
from ketter.engine.results import CopyResult
from ketter.errors import ChecksumMismatch, ShutdownRequested, SourceChanged

from .helpers import RecordingContext, ketter_names, read, write

MiB = 1024 * 1024
SPEC = TransferSpec(checkpoint_bytes=4 * MiB, resume_min_bytes=2 * MiB)


@pytest.fixture
def paths(bt: bytes, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Forces the direct path (the source counts as cold) and counts which
    path and which verifier each copy used."""
    probe = bt + b"/probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        dfd = direct.open_direct(fd, os.O_RDONLY)
    finally:
        os.close(fd)
    if dfd is None:
        pytest.skip("this filesystem refuses O_DIRECT")
    os.close(dfd)
    os.unlink(probe)
    monkeypatch.setattr(direct, "cached", lambda fd, pos: False)
    monkeypatch.delenv("KETTER_DIRECT_IO", raising=False)
    used = {"direct": 0, "buffered": 0, "direct_verify": 0}
    for name, key in (("_copy_direct", "direct"), ("copy_buffered", "buffered")):
        orig = getattr(copyfile, name)

        def counted(*a, _orig=orig, _key=key, **kw):  # type: ignore[no-untyped-def]
            used[_key] += 1
            return _orig(*a, **kw)

        monkeypatch.setattr(copyfile, name, counted)
    orig_verifier = direct.DirectVerifier.__init__

    def verifier_init(self, *a, **kw):  # type: ignore[no-untyped-def]
        used["direct_verify"] += 1
        orig_verifier(self, *a, **kw)

    monkeypatch.setattr(direct.DirectVerifier, "__init__", verifier_init)
    return used


def _copy(bt: bytes, data: bytes, ctx: TransferContext | None = None) -> CopyResult:
    src = bt + b"/src/reel.mov"
    write(src, data, mtime_ns=1_600_000_000_123_456_789, mode=0o640)
    plan = inspect_source(SPEC, src)
    return copy_and_verify(SPEC, plan, bt + b"/dst/reel.mov", ctx or TransferContext())


@pytest.mark.parametrize(
    "size",
    [9 * MiB + 1234, 8 * MiB, 4 * MiB + 1, 13 * MiB + 4096],  # unaligned tail, whole chunks, …
)
def test_direct_copy_is_byte_identical(bt: bytes, paths: dict[str, int], size: int) -> None:
    data = os.urandom(size)
    result = _copy(bt, data)
    assert paths == {"direct": 1, "buffered": 0, "direct_verify": 1}
    assert read(result.temp_path) == data
    assert result.hashes["sha256"] == hashlib.sha256(data).hexdigest()
    st = os.stat(result.temp_path)
    assert st.st_size == size
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    assert stat.S_IMODE(st.st_mode) == 0o640


def test_xxh128_route(bt: bytes, paths: dict[str, int]) -> None:
    data = os.urandom(6 * MiB + 7)
    src = bt + b"/src/a"
    write(src, data)
    spec = TransferSpec(checkpoint_bytes=4 * MiB, verify="xxh128")
    result = copy_and_verify(spec, inspect_source(spec, src), bt + b"/dst/a", TransferContext())
    assert paths["direct"] == 1 and read(result.temp_path) == data


def test_switched_off_by_the_environment(
    bt: bytes, paths: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KETTER_DIRECT_IO", "0")
    data = os.urandom(5 * MiB + 3)
    result = _copy(bt, data)
    assert paths == {"direct": 0, "buffered": 1, "direct_verify": 0}
    assert read(result.temp_path) == data


@pytest.mark.parametrize("side", ["read", "write"])
def test_a_refused_first_request_falls_back_to_buffered(
    bt: bytes, paths: dict[str, int], monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    """Some filesystems accept O_DIRECT at open and refuse the first request."""
    name = "_read_chunk" if side == "read" else "_write_chunk"
    orig = getattr(direct.DirectPipe, name)

    def refuse(self, i, *a):  # type: ignore[no-untyped-def]
        if i == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        return orig(self, i, *a)

    monkeypatch.setattr(direct.DirectPipe, name, refuse)
    data = os.urandom(7 * MiB + 11)
    result = _copy(bt, data)
    assert paths == {"direct": 0, "buffered": 1, "direct_verify": 0}
    assert read(result.temp_path) == data


def test_refused_at_open_falls_back(
    bt: bytes, paths: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "open_direct", lambda fd, flags: None)  # tmpfs before 6.6
    data = os.urandom(5 * MiB)
    result = _copy(bt, data)
    assert paths["buffered"] == 1 and paths["direct"] == 0
    assert read(result.temp_path) == data


def test_a_cached_source_takes_the_buffered_path(
    bt: bytes, paths: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "cached", lambda fd, pos: True)
    data = os.urandom(5 * MiB)
    result = _copy(bt, data)
    assert read(result.temp_path) == data
    assert paths["buffered"] == 1 and paths["direct"] == 0


def test_a_growing_source_is_detected(bt: bytes, paths: dict[str, int]) -> None:
    src = bt + b"/src/reel.mov"
    data = os.urandom(10 * MiB + 5)
    grown = threading.Event()

    def grow(done: int, phase: str) -> None:
        if not grown.is_set():
            grown.set()
            with open(src, "ab") as f:
                f.write(b"more")

    with pytest.raises(SourceChanged):
        _copy(bt, data, RecordingContext(on_progress=grow))
    assert paths["direct"] == 1
    assert ketter_names(bt) == []  # the temporary is removed


def test_a_stop_keeps_a_resumable_partial(bt: bytes, paths: dict[str, int]) -> None:
    # Longer than the pipeline can run ahead of the hashing (N_BUFFERS
    # chunks): stopped at 12 MiB hashed, the writers cannot have finished.
    data = os.urandom(12 * MiB + direct.N_BUFFERS * direct.CHUNK + 8 * MiB + 99)

    def stop(done: int, phase: str) -> None:
        if phase == "copy" and done >= 9 * MiB:
            raise ShutdownRequested()

    before = set(threading.enumerate())
    src = bt + b"/src/reel.mov"
    with pytest.raises(ShutdownRequested):
        _copy(bt, data, RecordingContext("9", "old", on_progress=stop))
    assert [
        t.name for t in threading.enumerate() if t not in before and t.name.startswith("ketter-")
    ] == []  # readers, writers and verifier readers are joined
    part = bt + b"/dst/" + temp_name("9-old", b"reel.mov", "part")
    size = os.path.getsize(part)
    # Chunks are written out of order: the partial is cut to what was written
    # without a hole (at least the first chunk, written before the threads).
    assert size >= direct.CHUNK and size % direct.CHUNK == 0
    assert read(part) == data[:size]
    plan = inspect_source(SPEC, src)
    result = copy_and_verify(
        SPEC, plan, bt + b"/dst/reel.mov", TransferContext("9", "new"), resume=True
    )
    assert result.resumed_from >= 4 * MiB
    assert paths["direct"] == 2  # the resumed remainder too
    assert read(result.temp_path) == data


def test_the_direct_read_back_reaches_the_disk(bt: bytes, paths: dict[str, int]) -> None:
    """The source and the read-back are both direct reads: storage serves
    twice the file (the part verified before the final fsync and the tail
    after it included)."""
    if not os.path.exists("/proc/self/io"):
        pytest.skip("no /proc/self/io here")
    size = 9 * MiB + 1234
    data = os.urandom(size)
    src = bt + b"/src/reel.mov"
    write(src, data)
    plan = inspect_source(SPEC, src)

    def read_bytes() -> int:
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("read_bytes")).split()[1])

    before = read_bytes()
    copy_and_verify(SPEC, plan, bt + b"/dst/reel.mov", TransferContext())
    delta = read_bytes() - before
    if delta == 0:
        pytest.skip("this filesystem does not account direct reads in read_bytes")
    assert paths["direct"] == 1
    assert delta >= 2 * size - 4096, f"{delta} bytes read from storage for 2 × {size}"


@pytest.fixture
def journalled(bt: bytes) -> Iterator[bytes]:
    """An ext4 with ``data=journal`` on a loop device: it accepts O_DIRECT
    but caches the writes anyway (the kernel falls back to buffered I/O)."""
    image, mnt = bt + b"/ext4.img", bt + b"/mnt"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    tools = [shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
             for t in ("mkfs.ext4", "mount")]
    if None in tools:
        pytest.skip("mkfs.ext4 or mount is not installed")
    mkfs = subprocess.run([tools[0], "-q", "-F", image], capture_output=True, text=True)
    if mkfs.returncode != 0:
        pytest.skip(f"mkfs.ext4 unavailable: {mkfs.stderr.strip()[:200]}")
    os.mkdir(mnt)
    r = subprocess.run(
        [tools[1], "-o", "loop,data=journal", image, mnt], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 here ({r.stderr.strip()[:200]}); needs root")
    try:
        os.mkdir(mnt + b"/src")
        os.mkdir(mnt + b"/dst")
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)


def test_a_filesystem_that_caches_direct_writes_is_still_read_back_from_disk(
    journalled: bytes, paths: dict[str, int]
) -> None:
    """The read-back would otherwise find the written data in the page cache."""
    size = 9 * MiB + 1234
    data = os.urandom(size)
    src = journalled + b"/src/reel.mov"
    write(src, data)  # and still in the page cache: only the read-back reads the disk
    plan = inspect_source(SPEC, src)
    with open("/proc/self/io") as f:
        before = int(next(line for line in f if line.startswith("read_bytes")).split()[1])
    result = copy_and_verify(SPEC, plan, journalled + b"/dst/reel.mov", TransferContext())
    with open("/proc/self/io") as f:
        delta = int(next(line for line in f if line.startswith("read_bytes")).split()[1]) - before
    assert paths["direct"] == 1
    assert read(result.temp_path) == data
    assert delta >= size - 4096, f"only {delta} of {size} bytes were read back from the disk"


@pytest.mark.parametrize("where", ["before_fsync", "tail_after_fsync"])
def test_a_byte_flipped_on_disk_after_the_write_is_caught(
    bt: bytes, paths: dict[str, int], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The read-back overlapped with the copy and the final fsync (#19 P1)
    hashes what the disk holds: a byte changed in the temporary after it was
    written fails the copy with a mismatch, in a window read back while the
    copy goes on as in the unaligned tail read back after the fsync, and the
    temporary is removed."""
    size = 13 * MiB + 1234  # windows of 4 MiB (SPEC), then an unaligned tail
    data = os.urandom(size)
    seen: list[tuple[str, int, int]] = []
    orig_seal = copyfile.seal_temp
    orig_submit = copyfile._submit_written

    def flip(fd: int, off: int) -> None:
        # Through a second, buffered descriptor: the engine's write-back and
        # eviction before the read-back put it on the disk.
        wfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
        try:
            os.pwrite(wfd, bytes([data[off] ^ 0xFF]), off)
            os.fsync(wfd)
        finally:
            os.close(wfd)

    def submit(fd, out, verifier, a, b):  # type: ignore[no-untyped-def]
        seen.append(("submit", a, b))
        if where == "before_fsync" and len(seen) == 1:
            flip(fd, a + 4321)
        return orig_submit(fd, out, verifier, a, b)

    def seal(src, sfd, e, ofd, out):  # type: ignore[no-untyped-def]
        seen.append(("seal", 0, 0))
        if where == "tail_after_fsync":
            flip(ofd, size - 7)
        return orig_seal(src, sfd, e, ofd, out)

    monkeypatch.setattr(copyfile, "_submit_written", submit)
    monkeypatch.setattr(copyfile, "seal_temp", seal)
    with pytest.raises(ChecksumMismatch, match="reads back from disk"):
        _copy(bt, data)
    assert paths["direct"] == 1 and paths["direct_verify"] == 1
    # The first window went to the read-back while the copy went on, before
    # the temporary was sealed and fsynced.
    assert seen[0][0] == "submit" and seen[0][2] <= size - size % direct.ALIGN
    assert ("seal", 0, 0) in seen[1:]
    assert ketter_names(bt + b"/dst") == []


def test_the_read_back_follows_the_writes_not_the_checkpoints(
    bt: bytes, paths: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written ranges go to the direct read-back every ``VERIFY_STEP``
    bytes while the copy goes on, even inside one checkpoint window (64 MiB
    by default): less is left to read back after the final fsync (#19 P1).
    They cover the file's aligned part in order, before the seal; the
    unaligned tail is read back after it."""
    # Longer than the pipe's buffers can run ahead of the hashing (the
    # writers are at most N_BUFFERS + 1 chunks ahead at the first check),
    # so the first range cannot be the whole file, however the threads run.
    size = (direct.N_BUFFERS + 4) * direct.CHUNK + 5
    data = os.urandom(size)
    events: list[tuple[str, int, int]] = []
    orig_seal = copyfile.seal_temp
    orig_submit = copyfile._submit_written

    def submit(fd, out, verifier, a, b):  # type: ignore[no-untyped-def]
        events.append(("submit", a, b))
        return orig_submit(fd, out, verifier, a, b)

    def seal(*a):  # type: ignore[no-untyped-def]
        events.append(("seal", 0, 0))
        return orig_seal(*a)

    monkeypatch.setattr(copyfile, "_submit_written", submit)
    monkeypatch.setattr(copyfile, "seal_temp", seal)
    src = bt + b"/src/reel.mov"
    write(src, data)
    spec = TransferSpec()  # checkpoint windows of 64 MiB: one window here
    assert spec.checkpoint_bytes > size
    result = copy_and_verify(spec, inspect_source(spec, src), bt + b"/dst/r", TransferContext())
    assert paths["direct"] == 1 and read(result.temp_path) == data
    before = events[: events.index(("seal", 0, 0))]
    ranges = [(a, b) for _, a, b in before]
    assert len(ranges) >= 2, ranges
    first_end = ranges[0][1]
    assert ranges[0][0] == 0
    assert copyfile.VERIFY_STEP <= first_end <= (direct.N_BUFFERS + 1) * direct.CHUNK
    assert all(r[1] == s[0] for r, s in itertools.pairwise(ranges))
    assert ranges[-1][1] == size - size % direct.ALIGN
