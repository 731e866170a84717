"""Every long read or hash reports progress, and a stop signal ends it.

The job pipeline's ``ctx.progress`` renews the lease: a phase that reads a
big file without calling it looks stalled and gets its lease taken over.
Each phase below reads a 48 MiB file with ``checkpoint_bytes`` of 1 MiB and
must call progress many times; raising ``LostClaim`` (or
``ShutdownRequested``) from the first call of the phase must end it there
(no later progress call, no engine thread left running) and leave no
temporary except a file partial a later claim resumes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ketter.engine import (
    TransferContext,
    TransferSpec,
    copy_and_verify,
    identical_result,
    inspect_source,
    place,
    resolve_destination,
)
from ketter.engine.folders import verify_tree
from ketter.engine.members import FileTrail
from ketter.engine.paths import temp_name
from ketter.engine.progress import Progress
from ketter.engine.results import CopyResult, FileHashes
from ketter.errors import LostClaim, ShutdownRequested
from ketter.jobs.lease import ActiveJob

from .helpers import RecordingContext, ketter_names, read, snapshot, write
from .workers_bench import Workers, events

MiB = 1024 * 1024
SIZE = 48 * MiB + 5
#: 48 MiB read in 1-4 MiB buffers with 1 MiB checkpoints: a dozen reports
#: at the very least, whatever the buffer size of the phase.
MIN_CALLS = 8


def _spec(**kw: Any) -> TransferSpec:
    return TransferSpec(checkpoint_bytes=MiB, resume_min_bytes=2 * MiB, **kw)


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(MiB) * 48 + b"tail!"


def _calls(ctx: RecordingContext, phase: str) -> list[int]:
    return [done for done, p in ctx.calls if p == phase]


def _reports_often(ctx: RecordingContext, phase: str, size: int = SIZE) -> None:
    done = _calls(ctx, phase)
    assert len(done) >= MIN_CALLS, (phase, ctx.calls)
    assert done == sorted(done), done
    # While reading, not only at the end. A comparison reports the mean of
    # its two sides, and the destination (one hash, often cached) can be read
    # in full before the source's first buffer: its first report is then at
    # about half the size, so "early" means below three quarters.
    assert any(0 < d < size * 3 // 4 for d in done), done


def _stop_at(phase: str, exc: type[BaseException] = LostClaim) -> Callable[[int, str], None]:
    def hook(done: int, p: str) -> None:
        if p == phase:
            raise exc()

    return hook


@pytest.fixture
def engine_threads() -> Iterator[Callable[[], list[str]]]:
    """Engine threads started by the test and still running."""
    before = set(threading.enumerate())

    def alive() -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t not in before and t.name.startswith("ketter-") and t.is_alive()
        ]

    yield alive


def _stopped_at_first_call(ctx: RecordingContext, phase: str) -> None:
    """The stop raised at the first call of ``phase`` and nothing followed."""
    assert ctx.calls and ctx.calls[-1][1] == phase
    assert len(_calls(ctx, phase)) == 1, ctx.calls


# --- compare: skip_identical before copying (identical_result) -------------


def _identical_file(bt: bytes, data: bytes) -> tuple[TransferSpec, bytes, bytes]:
    spec = _spec(conflict="skip_identical")
    src = bt + b"/src/big.mov"
    write(src, data, mtime_ns=1_600_000_000_000_000_000)
    write(bt + b"/dst/big.mov", data)
    return spec, src, bt + b"/dst/big.mov"


def test_identical_result_reports_compare(bt: bytes, data: bytes) -> None:
    spec, src, final = _identical_file(bt, data)
    ctx = RecordingContext()
    plan = inspect_source(spec, src)
    result = identical_result(spec, plan, final, ctx=ctx)
    assert result is not None and result.skipped
    _reports_often(ctx, "compare")
    assert identical_result(spec, plan, final) is not None  # ctx stays optional


def test_identical_result_folder_reports_compare(bt: bytes, data: bytes) -> None:
    spec = _spec(conflict="skip_identical", folders="as_unit")
    for root in (b"/src/show", b"/dst/show"):
        write(bt + root + b"/a.txt", b"small")
        write(bt + root + b"/reel/big.mov", data)
    ctx = RecordingContext()
    plan = inspect_source(spec, bt + b"/src/show")
    result = identical_result(spec, plan, bt + b"/dst/show", ctx=ctx)
    assert result is not None and result.skipped
    _reports_often(ctx, "compare", SIZE + 5)


@pytest.mark.parametrize("exc", [LostClaim, ShutdownRequested])
def test_identical_result_stops(
    bt: bytes, data: bytes, exc: type[BaseException], engine_threads: Callable[[], list[str]]
) -> None:
    spec, src, final = _identical_file(bt, data)
    before = snapshot(bt + b"/dst")
    ctx = RecordingContext(on_progress=_stop_at("compare", exc))
    with pytest.raises(exc):
        identical_result(spec, inspect_source(spec, src), final, ctx=ctx)
    _stopped_at_first_call(ctx, "compare")
    assert engine_threads() == []  # the destination reader was cancelled and joined
    assert snapshot(bt + b"/dst") == before
    assert ketter_names(bt) == []


# --- compare: skip_identical at placement (matches_result) ----------------


def _copied(
    bt: bytes, data: bytes, folder: bool
) -> tuple[TransferSpec, RecordingContext, CopyResult]:
    spec = _spec(conflict="skip_identical", folders="as_unit", package_min_files=0)
    if folder:
        write(bt + b"/src/show/a.txt", b"small")
        write(bt + b"/src/show/reel/big.mov", data)
        src = bt + b"/src/show"
    else:
        src = bt + b"/src/big.mov"
        write(src, data)
    plan = inspect_source(spec, src)
    final = resolve_destination(spec, plan, bt + b"/dst")
    ctx = RecordingContext("7", "a")
    result = copy_and_verify(spec, plan, final, ctx)
    # Someone delivers the same content under the final name meanwhile.
    if folder:
        shutil.copytree(src, final)
    else:
        write(final, data)
    ctx.calls.clear()
    return spec, ctx, result


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_place_skip_identical_reports_compare(bt: bytes, data: bytes, folder: bool) -> None:
    spec, ctx, result = _copied(bt, data, folder)
    placement = place(spec, result, ctx)
    assert placement.skipped
    _reports_often(ctx, "compare", SIZE + (5 if folder else 0))
    assert ketter_names(bt) == []


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_place_skip_identical_stops(
    bt: bytes, data: bytes, folder: bool, engine_threads: Callable[[], list[str]]
) -> None:
    spec, ctx, result = _copied(bt, data, folder)
    final = result.final_path
    before = snapshot(final)
    ctx.on_progress = _stop_at("compare")
    with pytest.raises(LostClaim):
        place(spec, result, ctx)
    _stopped_at_first_call(ctx, "compare")
    assert engine_threads() == []
    assert snapshot(final) == before
    if folder:
        assert ketter_names(bt) == []  # a folder temporary cannot be resumed
    else:
        # The verified copy is kept as a partial the next claim resumes.
        assert ketter_names(bt) == [result.temp_path]
        plan = inspect_source(spec, bt + b"/src/big.mov")
        again = copy_and_verify(spec, plan, final, TransferContext("7", "b"), resume=True)
        assert again.resumed_from == SIZE


# --- resume-check: re-reading a resumed prefix (adopt_prefix) -------------


def _partial(bt: bytes, data: bytes) -> tuple[TransferSpec, bytes, bytes]:
    spec = _spec()
    src = bt + b"/src/big.mov"
    write(src, data)
    plan = inspect_source(spec, src)
    final = resolve_destination(spec, plan, bt + b"/dst")

    def shutdown_late(done: int, phase: str) -> None:
        if phase == "copy" and done >= 40 * MiB:
            raise ShutdownRequested()

    with pytest.raises(ShutdownRequested):
        copy_and_verify(spec, plan, final, RecordingContext("9", "old", on_progress=shutdown_late))
    assert os.path.getsize(bt + b"/dst/" + temp_name("9-old", b"big.mov", "part")) >= 40 * MiB
    return spec, src, final


def test_resume_check_reports(bt: bytes, data: bytes) -> None:
    spec, src, final = _partial(bt, data)
    ctx = RecordingContext("9", "new")
    result = copy_and_verify(spec, inspect_source(spec, src), final, ctx, resume=True)
    assert result.resumed_from >= 40 * MiB
    _reports_often(ctx, "resume-check", result.resumed_from)


def test_resume_check_stops_and_keeps_the_partial(
    bt: bytes, data: bytes, engine_threads: Callable[[], list[str]]
) -> None:
    spec, src, final = _partial(bt, data)
    plan = inspect_source(spec, src)
    ctx = RecordingContext("9", "new", on_progress=_stop_at("resume-check"))
    with pytest.raises(LostClaim):
        copy_and_verify(spec, plan, final, ctx, resume=True)
    _stopped_at_first_call(ctx, "resume-check")
    assert engine_threads() == []  # the source reader was cancelled and joined
    part = bt + b"/dst/" + temp_name("9-new", b"big.mov", "part")
    assert ketter_names(bt) == [part]  # cut back to its last checkpoint, kept
    assert os.path.getsize(part) >= 40 * MiB and os.path.getsize(part) % MiB == 0
    result = copy_and_verify(spec, plan, final, TransferContext("9", "third"), resume=True)
    assert os.path.getsize(result.temp_path) == SIZE
    assert result.resumed_from >= 40 * MiB
    place(spec, result, TransferContext("9", "third"))
    assert read(final) == data


# --- package, extract, verify: as_unit folders (ZIP path, verify_tree) ----


def _packaged(bt: bytes, data: bytes) -> tuple[TransferSpec, bytes, bytes]:
    spec = _spec(folders="as_unit", package_min_files=2)
    write(bt + b"/src/show/a.txt", b"small")
    write(bt + b"/src/show/reel/big.mov", data)
    plan_src = bt + b"/src/show"
    final = resolve_destination(spec, inspect_source(spec, plan_src), bt + b"/dst")
    return spec, plan_src, final


def test_packaged_folder_reports_every_phase(bt: bytes, data: bytes) -> None:
    spec, src, final = _packaged(bt, data)
    ctx = RecordingContext()
    result = copy_and_verify(spec, inspect_source(spec, src), final, ctx)
    assert result.packaged
    phases = [p for _d, p in ctx.calls]
    for phase in ("package", "extract"):
        _reports_often(ctx, phase, SIZE + 5)
    # verify: the zip re-read (before extracting) and then the extracted
    # tree, whose one big member must report while it is being read.
    last_extract = len(phases) - 1 - phases[::-1].index("extract")
    tree = [d for d, p in ctx.calls[last_extract + 1 :] if p == "verify"]
    assert len(tree) >= MIN_CALLS, ctx.calls
    assert len(_calls(ctx, "verify")) - len(tree) >= MIN_CALLS


def test_verify_tree_reports_inside_one_big_file(bt: bytes, data: bytes) -> None:
    write(bt + b"/dst/t/big.mov", data)
    files = [FileHashes(b"big.mov", SIZE, {"sha256": hashlib.sha256(data).hexdigest()})]
    ctx = RecordingContext()
    verify_tree(bt + b"/dst/t", files, "sha256", set(), Progress(ctx, step=MiB))
    _reports_often(ctx, "verify")


def _stop_in_tree_verify(ctx_calls: list[tuple[int, str]]) -> Callable[[int, str], None]:
    def hook(done: int, phase: str) -> None:
        if phase == "verify" and any(p == "extract" for _d, p in ctx_calls):
            raise LostClaim()

    return hook


@pytest.mark.parametrize("phase", ["package", "zip-verify", "extract", "tree-verify"])
def test_packaged_folder_stops(
    bt: bytes, data: bytes, phase: str, engine_threads: Callable[[], list[str]]
) -> None:
    spec, src, final = _packaged(bt, data)
    ctx = RecordingContext()
    if phase == "tree-verify":
        ctx.on_progress = _stop_in_tree_verify(ctx.calls)
    else:
        ctx.on_progress = _stop_at("verify" if phase == "zip-verify" else phase)
    with pytest.raises(LostClaim):
        copy_and_verify(spec, inspect_source(spec, src), final, ctx)
    stopped = ctx.calls[-1][1]
    assert stopped == ("verify" if "verify" in phase else phase)
    if phase == "tree-verify":
        assert [p for _d, p in ctx.calls].count("verify") > 1  # zip verified before
        assert ctx.calls[-2][1] in ("extract", "verify")
    else:
        _stopped_at_first_call(ctx, stopped)
    assert engine_threads() == []
    assert ketter_names(bt) == []  # a folder cannot be resumed: .zip and .dir go
    assert os.listdir(bt + b"/dst") == []


def test_unpackaged_folder_stop_in_verify_removes_the_dir(
    bt: bytes, engine_threads: Callable[[], list[str]]
) -> None:
    spec = _spec(folders="as_unit", package_min_files=0)
    for i in range(40):
        write(bt + b"/src/show/f%02d.bin" % i, os.urandom(MiB // 2))
    plan = inspect_source(spec, bt + b"/src/show")
    final = resolve_destination(spec, plan, bt + b"/dst")
    ctx = RecordingContext()
    result = copy_and_verify(spec, plan, final, ctx)
    _reports_often(ctx, "verify", 20 * MiB)  # 40 small files, one report per MiB
    shutil.rmtree(result.temp_path)
    ctx = RecordingContext(on_progress=_stop_at("verify"))
    with pytest.raises(LostClaim):
        copy_and_verify(spec, plan, final, ctx)
    _stopped_at_first_call(ctx, "verify")
    assert engine_threads() == []
    assert ketter_names(bt) == []


@pytest.mark.parametrize("exc", [LostClaim, ShutdownRequested])
def test_mid_size_members_stop_with_their_read_backs(
    bt: bytes,
    exc: type[BaseException],
    engine_threads: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop during the copy of 1-64 MiB members (at the first report, after
    the first member, whose read-back is then queued or running) also ends
    the read-backs that trail it (FileTrail): no thread left, no temporary."""
    spec = _spec(folders="as_unit", package_min_files=0)
    for i in range(12):
        write(bt + b"/src/reel/f%02d.dpx" % i, os.urandom(2 * MiB + i))
    plan = inspect_source(spec, bt + b"/src/reel")
    final = resolve_destination(spec, plan, bt + b"/dst")

    submitted: list[bytes] = []
    submit = FileTrail.submit

    def counted(self: FileTrail, f: FileHashes) -> None:
        submitted.append(f.relpath)
        submit(self, f)

    monkeypatch.setattr(FileTrail, "submit", counted)
    ctx = RecordingContext(on_progress=_stop_at("copy", exc))
    with pytest.raises(exc):
        copy_and_verify(spec, plan, final, ctx)
    _stopped_at_first_call(ctx, "copy")
    assert submitted == [b"f00.dpx"]  # its read-back was queued or running
    assert engine_threads() == []
    assert ketter_names(bt) == []


# --- hash: same-filesystem move by rename, through the workers -----------


class HashReports:
    """A workers hook: each ``hash`` report (bytes done), with a pause longer
    than the context's 0.1 s throttle so every checkpoint reports."""

    def __init__(self, *, stop: bool = False) -> None:
        self.done: list[int] = []
        self.phases: list[str] = []
        self.stop = stop

    def __call__(self, active: ActiveJob) -> None:
        self.phases.append(active.phase)
        if active.phase != "hash":
            return
        self.done.append(active.bytes_done)
        if self.stop:
            active.lost = True  # the claim taken over: the context raises LostClaim
        else:
            time.sleep(0.11)


def test_move_by_rename_reports_hash(
    bt: bytes, data: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/big.mov", data)
    w = workers(mode="move", same_fs_move="rename")
    reports = HashReports()
    w.hooks.append(reports)
    (job,) = w.transfer("r", bt + b"/src/big.mov")
    assert job.state == "completed", job.error
    place = dict(events(job.id))["place"]
    assert place["mode"].startswith("moved:")
    assert len(reports.done) >= MIN_CALLS, reports.done
    assert reports.done == sorted(reports.done)
    assert any(0 < d < len(data) // 2 for d in reports.done)  # while reading
    assert "copy" not in reports.phases  # nothing copied
    assert read(bt + b"/dst/big.mov") == data
    assert job.sha256 == hashlib.sha256(data).hexdigest()


def test_move_by_rename_stops(
    bt: bytes, data: bytes, engine_threads: Callable[[], list[str]],
    workers: Callable[..., Workers],
) -> None:
    write(bt + b"/src/big.mov", data)
    w = workers(mode="move", same_fs_move="rename")
    reports = HashReports(stop=True)
    w.hooks.append(reports)
    (job,) = w.transfer("r", bt + b"/src/big.mov")
    assert job.state == "transferring"  # stopped, left to the claim's new owner
    assert len(reports.done) == 1, reports.done  # nothing read after the stop
    assert engine_threads() == []
    assert read(bt + b"/src/big.mov") == data
    assert os.listdir(bt + b"/dst") == []
