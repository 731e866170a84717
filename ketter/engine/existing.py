"""Is what already sits at the destination the same as the source?

Used by ``conflict: skip_identical`` — ideally before copying anything, so
an identical delivery completes without a byte written and without touching
the existing file.
"""

from __future__ import annotations

import os
import stat
import threading
from typing import Literal

from .copyfile import open_source
from .hashing import hash_fd_from_disk
from .paths import join
from .results import CopyResult, FileHashes
from .source import FileEntry, SourcePlan, scan_tree
from .spec import TransferSpec

State = Literal["absent", "identical", "different"]


def _hash_path(path: bytes, algo: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return hash_fd_from_disk(fd, (algo,))[0][algo]
    finally:
        os.close(fd)


def _hash_source(path: bytes, e: FileEntry, algos: tuple[str, ...]) -> dict[str, str]:
    fd = open_source(path, e)
    try:
        return hash_fd_from_disk(fd, algos)[0]
    finally:
        os.close(fd)


def _same_pair(
    src: bytes, e: FileEntry, dst: bytes, algo: str, algos: tuple[str, ...] = ()
) -> tuple[bool, dict[str, str]]:
    """Hash source (every algorithm: this is its one read) and destination
    side by side in two threads."""
    out: dict[str, str] = {}
    errs: list[BaseException] = []

    def run() -> None:
        try:
            out["dst"] = _hash_path(dst, algo)
        except BaseException as exc:
            errs.append(exc)

    t = threading.Thread(target=run, name="ketter-existing", daemon=True)
    t.start()
    try:
        s = _hash_source(src, e, tuple(dict.fromkeys((algo, *algos))))
    finally:
        t.join()
    if errs:
        raise errs[0]
    return s[algo] == out["dst"], s


def plan_entry(plan: SourcePlan) -> FileEntry:
    """The plan of a single file as a manifest entry."""
    return FileEntry(plan.name, plan.size, plan.mtime_ns, plan.mode, plan.ino)


def check_existing(spec: TransferSpec, plan: SourcePlan, final_path: bytes) -> State:
    """Compare the destination with the source by the verify checksum."""
    return compare_existing(spec, plan, final_path)[0]


def compare_existing(
    spec: TransferSpec, plan: SourcePlan, final_path: bytes
) -> tuple[State, dict[str, str], list[FileHashes]]:
    """:func:`check_existing` plus the source checksums when identical."""
    try:
        st = os.lstat(final_path)
    except FileNotFoundError:
        return "absent", {}, []
    if plan.kind == "file":
        if not stat.S_ISREG(st.st_mode) or st.st_size != plan.size:
            return "different", {}, []
        same, hashes = _same_pair(
            plan.path, plan_entry(plan), final_path, spec.verify, spec.algorithms
        )
        return ("identical" if same else "different"), hashes, []
    if not stat.S_ISDIR(st.st_mode):
        return "different", {}, []
    files, _dirs, _skipped = scan_tree(final_path)
    if [(f.relpath, f.size) for f in files] != [(f.relpath, f.size) for f in plan.files]:
        return "different", {}, []
    out = []
    for e in plan.files:
        same, hashes = _same_pair(
            plan.entry_path(e), e, join(final_path, e.relpath), spec.verify, spec.algorithms
        )
        if not same:
            return "different", {}, []
        out.append(FileHashes(e.relpath, e.size, hashes))
    return "identical", {}, out


def matches_result(final: bytes, result: CopyResult) -> bool:
    """Does the existing ``final`` hold exactly what ``result`` copied?"""
    algo = result.verify
    try:
        st = os.lstat(final)
        if result.plan.kind == "file":
            return stat.S_ISREG(st.st_mode) and _hash_path(final, algo) == result.hashes[algo]
        if not stat.S_ISDIR(st.st_mode):
            return False
        files, _dirs, _skipped = scan_tree(final)
        if [f.relpath for f in files] != [f.relpath for f in result.files]:
            return False
        return all(_hash_path(join(final, f.relpath), algo) == f.hashes[algo] for f in result.files)
    except OSError:
        return False
