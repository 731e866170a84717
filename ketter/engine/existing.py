"""Is what already sits at the destination the same as the source?

Used by ``conflict: skip_identical`` — ideally before copying anything, so
an identical delivery completes without a byte written and without touching
the existing file.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from typing import Literal

from .context import TransferContext
from .copyfile import DEFAULT_STEP, open_source, progress_for, shifted
from .hashing import ReadCancelled, hash_fd_from_disk
from .paths import join
from .results import CopyResult, FileHashes
from .source import FileEntry, SourcePlan, scan_tree
from .spec import TransferSpec

State = Literal["absent", "identical", "different"]
#: ``report(bytes_done)``: feeds a long read into the context's progress.
Report = Callable[[int], None]


def _hash_path(path: bytes, algo: str, report: Report | None = None) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return hash_fd_from_disk(fd, (algo,), progress=report)[0][algo]
    finally:
        os.close(fd)


def _hash_source(
    path: bytes, e: FileEntry, algos: tuple[str, ...], report: Report | None = None
) -> dict[str, str]:
    fd = open_source(path, e)
    try:
        return hash_fd_from_disk(fd, algos, progress=report)[0]
    finally:
        os.close(fd)


def _same_pair(
    src: bytes,
    e: FileEntry,
    dst: bytes,
    algo: str,
    algos: tuple[str, ...] = (),
    report: Report | None = None,
) -> tuple[bool, dict[str, str]]:
    """Hash source (every algorithm: this is its one read) and destination
    side by side in two threads.

    ``report(bytes)`` (the mean of the bytes read on both sides) runs in
    the calling thread only, after every source buffer, then while waiting
    for the destination; if it raises, the destination reader is cancelled
    and joined before the error leaves.
    """
    out: dict[str, str] = {}
    errs: list[BaseException] = []
    stop = threading.Event()
    dst_done = 0
    src_done = 0

    def dst_tick(n: int) -> None:
        nonlocal dst_done
        dst_done = n
        if stop.is_set():
            raise ReadCancelled()

    def run() -> None:
        try:
            out["dst"] = _hash_path(dst, algo, dst_tick)
        except ReadCancelled:
            pass
        except BaseException as exc:
            errs.append(exc)

    def src_tick(n: int) -> None:
        nonlocal src_done
        src_done = n
        if report is not None:
            report((src_done + dst_done) // 2)

    t = threading.Thread(target=run, name="ketter-existing", daemon=True)
    t.start()
    try:
        s = _hash_source(src, e, tuple(dict.fromkeys((algo, *algos))), src_tick)
        while t.is_alive():
            t.join(0.25)
            if report is not None and not errs:
                report((src_done + dst_done) // 2)
    except BaseException:
        stop.set()
        raise
    finally:
        t.join()
    if errs:
        raise errs[0]
    return s[algo] == out["dst"], s


def plan_entry(plan: SourcePlan) -> FileEntry:
    """The plan of a single file as a manifest entry."""
    return FileEntry(plan.name, plan.size, plan.mtime_ns, plan.mode, plan.ino, plan.ctime_ns)


def check_existing(
    spec: TransferSpec,
    plan: SourcePlan,
    final_path: bytes,
    *,
    ctx: TransferContext | None = None,
) -> State:
    """Compare the destination with the source by the verify checksum."""
    return compare_existing(spec, plan, final_path, ctx=ctx)[0]


def compare_existing(
    spec: TransferSpec,
    plan: SourcePlan,
    final_path: bytes,
    *,
    ctx: TransferContext | None = None,
) -> tuple[State, dict[str, str], list[FileHashes]]:
    """:func:`check_existing` plus the source checksums when identical.

    Both sides are read in full, so with a ``ctx`` the bytes compared are
    reported as phase ``compare`` (every ``spec.checkpoint_bytes``, at
    least once a second); a stop signal raised there ends the comparison.
    """
    progress = progress_for(ctx, spec.checkpoint_bytes)
    report = progress.reads("compare") if progress is not None else None
    try:
        st = os.lstat(final_path)
    except FileNotFoundError:
        return "absent", {}, []
    if plan.kind == "file":
        if not stat.S_ISREG(st.st_mode) or st.st_size != plan.size:
            return "different", {}, []
        same, hashes = _same_pair(
            plan.path, plan_entry(plan), final_path, spec.verify, spec.algorithms, report
        )
        return ("identical" if same else "different"), hashes, []
    if not stat.S_ISDIR(st.st_mode):
        return "different", {}, []
    files, _dirs, _skipped = scan_tree(final_path)
    if [(f.relpath, f.size) for f in files] != [(f.relpath, f.size) for f in plan.files]:
        return "different", {}, []
    out = []
    base = 0
    for e in plan.files:
        same, hashes = _same_pair(
            plan.entry_path(e),
            e,
            join(final_path, e.relpath),
            spec.verify,
            spec.algorithms,
            shifted(report, base),
        )
        if not same:
            return "different", {}, []
        out.append(FileHashes(e.relpath, e.size, hashes))
        base += e.size
    return "identical", {}, out


def matches_result(
    final: bytes,
    result: CopyResult,
    *,
    ctx: TransferContext | None = None,
    step: int = DEFAULT_STEP,
) -> bool:
    """Does the existing ``final`` hold exactly what ``result`` copied?

    With a ``ctx``, the bytes hashed are reported as phase ``compare`` every
    ``step`` bytes (and at least once a second); stop signals raised there
    propagate (only an ``OSError`` means "does not match").
    """
    algo = result.verify
    progress = progress_for(ctx, step)
    report = progress.reads("compare") if progress is not None else None
    try:
        st = os.lstat(final)
        if result.plan.kind == "file":
            return (
                stat.S_ISREG(st.st_mode) and _hash_path(final, algo, report) == result.hashes[algo]
            )
        if not stat.S_ISDIR(st.st_mode):
            return False
        files, _dirs, _skipped = scan_tree(final)
        if [f.relpath for f in files] != [f.relpath for f in result.files]:
            return False
        base = 0
        for f in result.files:
            if _hash_path(join(final, f.relpath), algo, shifted(report, base)) != f.hashes[algo]:
                return False
            base += f.size
        return True
    except OSError:
        return False
