"""MOVE: deleting sources only after a verified, recorded placement (R-T1).

A source file is deleted only if its size, mtime_ns, inode and ctime_ns
still match what was copied; a file changed since is kept (and reported) so
the watcher picks it up as new work. Nothing is deleted while a process
holds a source open for writing (:mod:`.open_writers`, issue #14 finding
15): the job waits and tries again instead of unlinking a file someone is
still writing into. The delivery itself must still be where the
placement says, or nothing is deleted.
"""

from __future__ import annotations

import contextlib
import os
import stat

from ketter.errors import PermanentError, SourceInUse
from ketter.paths import readable

from .context import TransferContext
from .copyio import open_source
from .existing import plan_entry
from .hashing import BUF_SIZE, MultiHash, fsync_dir
from .mounts import check_mounts
from .open_writers import describe, open_writers
from .oserrors import classify_oserror
from .paths import join, show, split
from .progress import progress_for
from .prune import prune_empty_parents, remove_empty_folder
from .results import CopyResult, DeleteResult, FileHashes, Placement
from .source import FileEntry, SourcePlan, check_unchanged, same_identity
from .spec import TransferSpec


def _delete_file(path: bytes, e: FileEntry, res: DeleteResult, ctx: TransferContext) -> None:
    # Everything that decides this unlink is looked at right before it, in
    # this order: the stop hook first (it reads the job store, which takes a
    # while), then the identity, then the open writers of this very file. A
    # check made once per job, or before the hook, let a writer that opened
    # (or changed) frame N while frames 1..N-1 were being deleted lose what
    # it wrote into an unlinked inode (issue #14 finding 15, review). What is
    # left is the window between the one /proc pass below and the unlink
    # itself (docs/guarantees.md).
    ctx.before_irreversible(f"delete the source {show(path)}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        res.already_gone.append(path)
        return
    if not stat.S_ISREG(st.st_mode) or not same_identity(st, e):
        res.kept.append(path)
        ctx.warn("source_kept_changed", path=readable(path))
        return
    writers = open_writers([(st.st_dev, st.st_ino)])
    if writers:
        raise SourceInUse(
            f"source {show(path)} is still open for writing by {describe(writers)}; "
            "it is kept and deleted once the writer has closed it (the delivery is "
            "in place)"
        )
    try:
        os.unlink(path)
    except FileNotFoundError:
        res.already_gone.append(path)
        return
    except OSError as exc:
        raise classify_oserror(exc, path, "delete the source") from exc
    res.deleted.append(path)


def delete_source(
    spec: TransferSpec, plan: SourcePlan, placement: Placement, ctx: TransferContext
) -> DeleteResult:
    """Delete what was moved (idempotent); call only after recording ``placement``."""
    if spec.mode != "move":
        raise PermanentError("delete_source is only for mode 'move'")
    check_mounts(spec, ctx.expected_devs)
    try:
        st = os.lstat(placement.final_path)
    except FileNotFoundError:
        st = None
    if st is None or (st.st_ino, st.st_dev) != (placement.ino, placement.dev):
        raise PermanentError(
            f"the delivery {show(placement.final_path)} is no longer where it was "
            "placed; the source is kept — check the destination by hand"
        )
    if plan.kind == "folder":
        # Before deleting any member: a unit with a writer still in it (even
        # on a file the manifest does not list) waits whole. Each file is
        # looked at again right before its own unlink (_delete_file).
        _refuse_open_sources(plan)
    res = DeleteResult()
    if plan.kind == "file":
        _delete_file(plan.path, plan_entry(plan), res, ctx)
        prune_empty_parents(plan.path, spec.source_root, ctx.warn)  # per-file routes
    else:
        for i, e in enumerate(plan.files):
            if i:
                ctx.fault("between-source-deletes")
            _delete_file(plan.entry_path(e), e, res, ctx)
        root = _walk_root(spec, plan.path)
        for d in sorted(plan.dirs, key=lambda d: -d.relpath.count(b"/")):
            _rmdir_if_empty(plan.entry_path(d), root)
        if not _is_route_root(spec, plan.path):
            _rmdir_if_empty(plan.path, root)
    parent = split(plan.path)[0]
    if spec.ready_marker and not res.kept:
        marker = plan.path + spec.ready_marker.encode()
        try:
            os.unlink(marker)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise classify_oserror(exc, marker, "delete the ready marker") from exc
    # Deletions not yet durable only mean a source may reappear after a power
    # loss: it is then re-detected and resolved by the conflict policy.
    with contextlib.suppress(OSError):
        fsync_dir(parent)
    return res


def _refuse_open_sources(plan: SourcePlan) -> None:
    """No source is deleted while a process holds it open for writing: the
    writer paused longer than ``stable_seconds`` and is not done (finding 15).
    """
    files: list[tuple[int, int]] = []
    paths = [plan.path] if plan.kind == "file" else [plan.entry_path(e) for e in plan.files]
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue  # gone already, or unreadable: _delete_file decides
        files.append((st.st_dev, st.st_ino))
    under = [plan.path] if plan.kind == "folder" else []
    writers = open_writers(files, under)
    if writers:
        raise SourceInUse(
            f"source {show(plan.path)} is still open for writing by "
            f"{describe(writers)}; it is kept and deleted once the writer has "
            "closed it (the delivery is in place)"
        )


def _walk_root(spec: TransferSpec, unit: bytes) -> bytes:
    """Where the emptied folders of ``unit`` are reached from: the route's
    source root (never removed itself) when ``unit`` is inside it, else the
    folder that holds ``unit`` (a one-shot transfer)."""
    root = spec.source_root
    if root is not None:
        root = os.path.normpath(root)
        if os.path.normpath(unit).startswith(root.rstrip(b"/") + b"/"):
            return root
    return split(os.path.normpath(unit))[0]


def _is_route_root(spec: TransferSpec, path: bytes) -> bool:
    """The route root is never removed, however it is spelled."""
    if spec.source_root is None:
        return False
    try:
        return os.path.samefile(path, spec.source_root)
    except OSError:
        return False


def _rmdir_if_empty(path: bytes, root: bytes) -> None:
    # Descriptor-relative from ``root`` (.prune): a link swapped in for a
    # folder on the way is never followed, so no empty folder outside the
    # unit is removed.
    try:
        remove_empty_folder(path, root)
    except OSError as exc:
        raise classify_oserror(exc, path, "remove an emptied source folder") from exc


def same_filesystem(src: bytes, final: bytes) -> bool:
    try:
        return os.lstat(src).st_dev == os.stat(split(final)[0]).st_dev
    except OSError:
        return False


def hash_source(
    spec: TransferSpec, plan: SourcePlan, *, ctx: TransferContext | None = None
) -> CopyResult:
    """One read of the source for the record, without copying (same-fs rename).

    With a ``ctx`` the bytes hashed are reported as phase ``hash`` (every
    ``spec.checkpoint_bytes``, at least once a second); a stop signal raised
    there ends the read (nothing has been written).
    """
    progress = progress_for(ctx, spec.checkpoint_bytes)
    report = progress.reads("hash") if progress is not None else None
    done = 0

    def one(path: bytes, e: FileEntry) -> FileHashes:
        nonlocal done
        mh = MultiHash(spec.algorithms)
        fd = open_source(path, e)
        try:
            while chunk := os.read(fd, BUF_SIZE):
                mh.update(chunk)
                done += len(chunk)
                if report is not None:
                    report(done)
        finally:
            os.close(fd)
        return FileHashes(e.relpath, e.size, mh.hexdigests())

    if plan.kind == "file":
        fh = one(plan.path, plan_entry(plan))
        return CopyResult(plan, b"", plan.path, spec.verify, hashes=fh.hashes, bytes_copied=0)
    files = [one(plan.entry_path(e), e) for e in plan.files]
    check_unchanged(plan)
    return CopyResult(plan, b"", plan.path, spec.verify, files=files)


def move_by_rename(
    spec: TransferSpec, plan: SourcePlan, final_path: bytes, ctx: TransferContext
) -> tuple[CopyResult, Placement]:
    """``same_fs_move: rename``: hash once, then rename the source itself into
    place with the same no-replace placement (nothing is copied)."""
    from .placement import place  # placement imports move's siblings

    check_mounts(spec, ctx.expected_devs)
    result = hash_source(spec, plan, ctx=ctx)
    result.final_path = final_path
    # The source itself becomes the delivery: never one a writer still holds.
    # Looked at after the hash (which may take minutes on a large file) and
    # right before the rename: a writer that opened it during the hash is
    # seen (issue #14 finding 15, review).
    _refuse_open_sources(plan)
    placement = place(spec, result, ctx, own_temp=False)
    if placement.skipped:
        return result, placement
    return result, Placement(
        placement.final_path,
        placement.ino,
        placement.dev,
        False,
        "moved:" + placement.mode,
        placement.replaced,
    )


__all__ = ["delete_source", "hash_source", "join", "move_by_rename", "same_filesystem"]
