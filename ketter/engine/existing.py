"""Is what already sits at the destination the same as the source?

Used by ``conflict: skip_identical`` — ideally before copying anything, so
an identical delivery completes without a byte written and without touching
the existing file.

The destination is reached from the route's root without following a link
(:mod:`.beneath`) and each file is hashed through a descriptor opened with
``O_NOFOLLOW | O_NONBLOCK`` relative to its folder and refused unless
``fstat`` says regular: a folder swapped for a link to an identical copy
elsewhere must not count as delivered (a move would then delete the source
while the only copy sits outside the route: #14 finding 1). The identity
(inode, device) of what was compared travels in the result so placement can
check the name still holds it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Literal

from ketter.choices import Kind

from .beneath import open_below, open_parent, step
from .context import TransferContext
from .copyio import open_source
from .hashing import ReadCancelled, hash_fd_from_disk
from .paths import split
from .progress import DEFAULT_STEP, progress_for, shifted
from .results import CopyResult, FileHashes
from .source import FileEntry, SourcePlan, scan_tree
from .spec import TransferSpec

State = Literal["absent", "identical", "different"]
#: ``report(bytes_done)``: feeds a long read into the context's progress.
Report = Callable[[int], None]
#: (folder descriptor, name in it): a destination file reached without links.
At = tuple[int, bytes]
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _NotRegular(OSError):
    """The destination name is not a regular file (never the same content)."""


def _hash_at(at: At, algo: str, report: Report | None = None) -> str:
    dir_fd, name = at
    fd = os.open(name, _READ, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotRegular(f"{name!r} is not a regular file")
        return hash_fd_from_disk(fd, (algo,), progress=report)[0][algo]
    finally:
        os.close(fd)


@contextlib.contextmanager
def _at(top: int, relpath: bytes, where: bytes) -> Iterator[At]:
    """(descriptor of ``relpath``'s folder below ``top``, its name)."""
    parent, name = split(relpath)
    fd = open_below(top, b"" if parent == b"." else parent, where)
    try:
        yield fd, name
    finally:
        os.close(fd)


@contextlib.contextmanager
def _final_parent(root: bytes | None, final: bytes, dir_fd: int | None) -> Iterator[At]:
    if dir_fd is not None:
        yield dir_fd, split(final)[1]
        return
    pfd, name = open_parent(root, final)
    try:
        yield pfd, name
    finally:
        os.close(pfd)


def _scan_at(dir_fd: int, name: bytes, where: bytes) -> tuple[int, list[FileEntry]]:
    """(descriptor of the folder ``name``, its files): opened without
    following a link, listed through its ``/proc/self/fd`` entry (the opened
    folder itself, not a path that could be swapped)."""
    fd = step(dir_fd, name, where, create=False)
    try:
        files, _dirs, _skipped = scan_tree(b"/proc/self/fd/%d" % fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, files


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
    dst: At,
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
            out["dst"] = _hash_at(dst, algo, dst_tick)
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
    identity: list[tuple[int, int]] | None = None,
) -> tuple[State, dict[str, str], list[FileHashes]]:
    """:func:`check_existing` plus the source checksums when identical.

    ``identity``: receives the (inode, device) of the destination compared.

    Both sides are read in full, so with a ``ctx`` the bytes compared are
    reported as phase ``compare`` (every ``spec.checkpoint_bytes``, at
    least once a second); a stop signal raised there ends the comparison.
    """
    progress = progress_for(ctx, spec.checkpoint_bytes)
    report = progress.reads("compare") if progress is not None else None
    try:
        pfd, name = open_parent(spec.destination_root, final_path)
    except FileNotFoundError:
        return "absent", {}, []
    try:
        return _compare_at(spec, plan, final_path, (pfd, name), report, identity)
    except _NotRegular:
        return "different", {}, []
    finally:
        os.close(pfd)


def _compare_at(
    spec: TransferSpec,
    plan: SourcePlan,
    final_path: bytes,
    at: At,
    report: Report | None,
    identity: list[tuple[int, int]] | None,
) -> tuple[State, dict[str, str], list[FileHashes]]:
    pfd, name = at
    try:
        st = os.lstat(name, dir_fd=pfd)
    except FileNotFoundError:
        return "absent", {}, []
    if identity is not None:
        identity.append((st.st_ino, st.st_dev))
    if plan.kind == Kind.FILE:
        if not stat.S_ISREG(st.st_mode) or st.st_size != plan.size:
            return "different", {}, []
        same, hashes = _same_pair(
            plan.path, plan_entry(plan), at, spec.verify, spec.algorithms, report
        )
        return ("identical" if same else "different"), hashes, []
    if not stat.S_ISDIR(st.st_mode):
        return "different", {}, []
    top, files = _scan_at(pfd, name, final_path)
    try:
        if [(f.relpath, f.size) for f in files] != [(f.relpath, f.size) for f in plan.files]:
            return "different", {}, []
        out = []
        base = 0
        for e in plan.files:
            with _at(top, e.relpath, final_path) as dst:
                same, hashes = _same_pair(
                    plan.entry_path(e),
                    e,
                    dst,
                    spec.verify,
                    spec.algorithms,
                    shifted(report, base),
                )
            if not same:
                return "different", {}, []
            out.append(FileHashes(e.relpath, e.size, hashes))
            base += e.size
        return "identical", {}, out
    finally:
        os.close(top)


def matches_result(
    final: bytes,
    result: CopyResult,
    *,
    ctx: TransferContext | None = None,
    step: int = DEFAULT_STEP,
    dir_fd: int | None = None,
    root: bytes | None = None,
) -> bool:
    """Does the existing ``final`` hold exactly what ``result`` copied?

    ``final`` is reached relative to ``dir_fd`` (its folder's descriptor)
    when given, else from ``root`` without following a link.

    With a ``ctx``, the bytes hashed are reported as phase ``compare`` every
    ``step`` bytes (and at least once a second); stop signals raised there
    propagate (only an ``OSError`` means "does not match").
    """
    algo = result.verify
    progress = progress_for(ctx, step)
    report = progress.reads("compare") if progress is not None else None
    try:
        with _final_parent(root, final, dir_fd) as (pfd, name):
            st = os.lstat(name, dir_fd=pfd)
            if result.plan.kind == Kind.FILE:
                return (
                    stat.S_ISREG(st.st_mode)
                    and _hash_at((pfd, name), algo, report) == result.hashes[algo]
                )
            if not stat.S_ISDIR(st.st_mode):
                return False
            top, files = _scan_at(pfd, name, final)
            try:
                if [f.relpath for f in files] != [f.relpath for f in result.files]:
                    return False
                base = 0
                for f in result.files:
                    with _at(top, f.relpath, final) as at:
                        if _hash_at(at, algo, shifted(report, base)) != f.hashes[algo]:
                            return False
                    base += f.size
                return True
            finally:
                os.close(top)
    except OSError:
        return False
