"""The helper process of a folder's small members, on real files and a
real process: it reads sources ahead into the page cache (never blocking
on a special file), compares what the disk holds, refuses a special file
or another inode under a member's name without blocking, reports a death
of its own as a transient error, never outlives the process that started
it, and falls back to threads where it cannot start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ketter.engine import (
    TransferContext,
    TransferSpec,
    copy_and_verify,
    inspect_source,
    member_helper,
    members,
)
from ketter.engine.hashing import MultiHash
from ketter.engine.member_helper import MemberHelper
from ketter.engine.members import FileTrail
from ketter.engine.results import FileHashes
from ketter.errors import (
    ChecksumMismatch,
    DestinationSpecialFile,
    KetterError,
    TemporarySwapped,
    TransientError,
)
from tests.conftest import ROOT

from .helpers import read, write


def _member(folder: bytes, name: bytes, data: bytes, *, on_disk: bytes | None = None) -> FileHashes:
    """Write ``on_disk`` (default ``data``) as ``folder/name``; the checksums
    and inode a copy of ``data`` would have recorded."""
    write(folder + b"/" + name, data if on_disk is None else on_disk)
    mh = MultiHash(("sha256", "xxh128"))
    mh.update(data)
    st = os.stat(folder + b"/" + name)
    return FileHashes(name, len(data), mh.hexdigests(), ident=(st.st_dev, st.st_ino))


def _helper(folder: bytes, algo: str = "sha256") -> tuple[MemberHelper, list[int]]:
    """A helper whose fallback, if ever used, is counted."""
    fallbacks: list[int] = []

    def fallback() -> FileTrail:
        fallbacks.append(1)
        return FileTrail(folder, algo, 1)

    return MemberHelper(folder, algo, fallback), fallbacks


def _pid(helper: MemberHelper) -> int:
    assert helper._proc is not None, "the helper process did not start"
    return helper._proc.pid


@pytest.mark.parametrize("algo", ["sha256", "xxh128"])
def test_members_that_read_back_alike_pass_and_one_that_differs_fails_naming_it(
    bt: bytes, algo: str
) -> None:
    folder = bt + b"/dst"
    good = [_member(folder, b"f%03d" % i, os.urandom(4096 + i)) for i in range(40)]
    data = os.urandom(5000)
    bad = _member(
        folder, b"bad \xff", data, on_disk=data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    )
    helper, fallbacks = _helper(folder, algo)
    try:
        helper.submit_batch(good[:20])
        helper.submit_batch(good[20:])
        helper.finish()
        assert helper.read == sum(f.size for f in good)
        helper.submit_batch([good[0], bad])
        with pytest.raises(ChecksumMismatch, match=r"bad \\xff.*reads back from disk differently"):
            helper.finish()
        assert _pid(helper) != os.getpid()
    finally:
        helper.close()
    assert not fallbacks
    assert helper._proc is not None and helper._proc.returncode is not None  # reaped


def test_a_fifo_under_a_members_name_is_refused_without_blocking(bt: bytes) -> None:
    folder = bt + b"/dst"
    f = _member(folder, b"a.wav", os.urandom(4096))
    os.unlink(folder + b"/a.wav")
    os.mkfifo(folder + b"/a.wav")
    helper, _ = _helper(folder)
    try:
        helper.submit_batch([f])
        with pytest.raises(DestinationSpecialFile, match=r"a\.wav"):
            helper.finish()
    finally:
        helper.close()


def test_another_inode_under_a_members_name_is_refused(bt: bytes) -> None:
    folder = bt + b"/dst"
    data = os.urandom(4096)
    f = _member(folder, b"a.wav", data)
    os.rename(folder + b"/a.wav", folder + b"/a.wav.moved-away")
    write(folder + b"/a.wav", data)  # the same bytes, not the file Ketter wrote
    helper, _ = _helper(folder)
    try:
        helper.submit_batch([f])
        with pytest.raises(TemporarySwapped):
            helper.finish()
    finally:
        helper.close()


def test_a_vanished_member_is_an_error_that_names_it(bt: bytes) -> None:
    folder = bt + b"/dst"
    f = _member(folder, b"gone.wav", os.urandom(4096))
    os.unlink(folder + b"/gone.wav")
    helper, _ = _helper(folder)
    try:
        helper.submit_batch([f])
        with pytest.raises(KetterError, match=r"gone\.wav"):
            helper.finish()
    finally:
        helper.close()


def _cached(path: bytes) -> int:
    """Bytes of ``path`` in the page cache (util-linux ``fincore``)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[0])


def test_sources_are_read_ahead_without_blocking_on_a_special_file(bt: bytes) -> None:
    src = bt + b"/src"
    paths = [src + b"/f%02d" % i for i in range(32)]
    for p in paths:
        write(p, os.urandom(64 * 1024))
    os.mkfifo(src + b"/fifo")
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    if any(_cached(p) for p in paths):
        pytest.skip("this filesystem keeps the files cached whatever is asked")
    folder = bt + b"/dst"
    good = _member(folder, b"good", os.urandom(4096))
    helper, _ = _helper(folder)
    try:
        helper.warm([src + b"/fifo", src + b"/missing", *paths])
        helper.submit_batch([good])  # answered after the read-ahead: it did not block
        helper.finish()
        deadline = time.monotonic() + 30  # the reads it started may still be on their way
        while not all(_cached(p) == 64 * 1024 for p in paths):
            assert time.monotonic() < deadline, [_cached(p) for p in paths]
            time.sleep(0.05)
    finally:
        helper.close()


def test_a_helper_that_dies_is_a_transient_error(bt: bytes) -> None:
    folder = bt + b"/dst"
    files = [_member(folder, b"f%d" % i, os.urandom(4096)) for i in range(4)]
    helper, _ = _helper(folder)
    try:
        helper.submit_batch(files[:2])
        helper.finish()
        os.kill(_pid(helper), signal.SIGKILL)
        helper.submit_batch(files[2:])
        with pytest.raises(TransientError, match="member helper process ended"):
            helper.finish()
    finally:
        helper.close()


CHILD = """
import os, sys, time
from ketter.engine.members import FileTrail
from ketter.engine.member_helper import MemberHelper
from ketter.engine.results import FileHashes
folder = sys.argv[1].encode()
h = MemberHelper(folder, "sha256", lambda: FileTrail(folder, "sha256", 1))
h.submit_batch([])
print(h._proc.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("isolated", [False, True])
def test_the_helper_dies_with_the_process_that_started_it(bt: bytes, isolated: bool) -> None:
    """A worker killed with SIGKILL leaves no reader behind. Started as
    isolated as its parent (the units run ``python -I``)."""
    folder = bt + b"/dst"
    os.makedirs(folder, exist_ok=True)
    flags = ["-I"] if isolated else []
    parent = subprocess.Popen(
        [sys.executable, *flags, "-c", CHILD, folder], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        helper = int(parent.stdout.readline())
        with open(f"/proc/{helper}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"ketter.engine.member_helper_child" in argv
        assert argv[1] == (b"-I" if isolated else b"-P")
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{helper}") and time.monotonic() < deadline:
        with open(f"/proc/{helper}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # dead; its reaper (init here) has not collected it yet
        time.sleep(0.05)
    else:
        assert not os.path.exists(f"/proc/{helper}"), "the helper outlived its parent"


STARTED = ["exits at its start", "another version", "stuck at its start"]


@pytest.mark.parametrize("why", ["disabled", "cannot start", *STARTED])
def test_without_the_helper_the_members_are_read_back_in_threads(
    bt: bytes, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """What the helper was given before it said it was ready is read back
    by the fallback, not lost and not a failure."""
    if why == "disabled":
        monkeypatch.setenv("KETTER_MEMBER_HELPER", "0")
    elif why == "cannot start":
        monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    elif why == "exits at its start":  # an interpreter that cannot run the helper
        monkeypatch.setattr(sys, "executable", shutil.which("true"))
    elif why == "another version":  # the package upgraded under a running worker
        monkeypatch.setattr(member_helper, "PROTOCOL", member_helper.PROTOCOL + 1)
    else:
        hang = bt + b"/hang"
        write(hang, b"#!/bin/sh\nexec sleep 600\n", mode=0o755)
        monkeypatch.setattr(sys, "executable", os.fsdecode(hang))
        monkeypatch.setattr(member_helper, "READY_SECONDS", 0.5)
    folder = bt + b"/dst"
    data = os.urandom(4096)
    good = _member(folder, b"good", data)
    bad = _member(folder, b"bad", data, on_disk=bytes([data[0] ^ 0xFF]) + data[1:])
    helper, fallbacks = _helper(folder)
    try:
        helper.submit_batch([good])
        helper.finish()
        helper.submit_batch([bad])
        with pytest.raises(ChecksumMismatch, match="bad"):
            helper.finish()
    finally:
        helper.close()
    assert fallbacks == [1]
    assert (helper._proc is None) == (why not in STARTED)
    assert helper.read == 4096


CLOSED_STDIO = """
import os, sys
from ketter.engine.members import FileTrail
from ketter.engine.member_helper import MemberHelper
from tests.integration.engine.test_member_helper import _member
os.close(0)
os.close(1)  # a process started with its stdin and stdout closed
folder = sys.argv[1].encode()
good = _member(folder, b"good", b"G" * 4096)
bad = _member(folder, b"bad", b"B" * 4096, on_disk=b"X" * 4096)
used = []
h = MemberHelper(folder, "sha256", lambda: used.append(1) or FileTrail(folder, "sha256", 1))
try:
    h.submit_batch([good])
    h.finish()
    h.submit_batch([bad])
    try:
        h.finish()
        print("bad passed", file=sys.stderr)
    except Exception as exc:
        print(type(exc).__name__, "fallback" if used else "helper", file=sys.stderr)
finally:
    h.close()
"""


def test_a_process_started_with_stdin_and_stdout_closed_still_gets_its_helper(
    bt: bytes,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CLOSED_STDIO, bt + b"/dst"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stderr.strip().splitlines()[-1] == "ChecksumMismatch helper", out.stderr


def test_a_folder_copied_with_the_helper_arrives_whole(
    bt: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: early flushes every 8 members, so most are read back by
    the helper while the copy goes on."""
    monkeypatch.setattr(members, "FLUSH_FILES", 8)
    monkeypatch.setattr(members, "HELPER_FILES", 50)
    monkeypatch.setattr(members, "WARM_FILES", 16)
    started: list[int] = []
    spawn = MemberHelper._spawn

    def counted(self: MemberHelper) -> None:
        spawn(self)
        started.append(_pid(self))

    monkeypatch.setattr(MemberHelper, "_spawn", counted)
    sizes = [0, 1, 4095, 4096, 4097, 65536, 300_000] * 10
    for i, size in enumerate(sizes):
        write(bt + b"/src/seq/f%03d" % i, os.urandom(size))
    spec = TransferSpec(folders="as_unit", package_min_files=0)
    plan = inspect_source(spec, bt + b"/src/seq")
    result = copy_and_verify(spec, plan, bt + b"/dst/seq", TransferContext())
    assert len(started) == 1
    assert [f.relpath for f in result.files] == [b"f%03d" % i for i in range(len(sizes))]
    for i in range(len(sizes)):
        assert read(result.temp_path + b"/f%03d" % i) == read(bt + b"/src/seq/f%03d" % i)


def test_a_network_destination_reads_back_in_threads_without_the_helper(
    bt: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where every create and read is a round trip (a share), more threads
    keep more in flight: two copy threads and six readers, no helper."""
    monkeypatch.setattr(members, "attributes_current", lambda dev: False)
    monkeypatch.setattr(members, "HELPER_FILES", 10)
    spawned: list[int] = []
    monkeypatch.setattr(MemberHelper, "_spawn", lambda self: spawned.append(1))
    made: list[int] = []
    trail = members.FileTrail.__init__

    def counted(self: FileTrail, target: bytes, algo: str, threads: int = 2) -> None:
        made.append(threads)
        trail(self, target, algo, threads)

    monkeypatch.setattr(members.FileTrail, "__init__", counted)
    for i in range(40):
        write(bt + b"/src/seq/f%03d" % i, os.urandom(4096 + i))
    spec = TransferSpec(folders="as_unit", package_min_files=0)
    plan = inspect_source(spec, bt + b"/src/seq")
    result = copy_and_verify(spec, plan, bt + b"/dst/seq", TransferContext())
    assert not spawned
    assert members.NETWORK_TRAIL_THREADS in made
    for i in range(40):
        assert read(result.temp_path + b"/f%03d" % i) == read(bt + b"/src/seq/f%03d" % i)
