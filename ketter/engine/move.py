"""MOVE: deleting sources only after a verified, recorded placement (R-T1).

A source file is deleted only if its size, mtime_ns, inode and ctime_ns
still match what was copied; a file changed since is kept (and reported) so
the watcher picks it up as new work. A file whose ctime alone moved (a
``chmod`` or ``chgrp`` before a re-queue) is hashed and deleted when its
bytes are still the verified ones (:func:`_only_metadata_changed`).
Nothing is deleted while a process holds a source open for writing
(:mod:`.open_writers`, issue #14 finding 15): the job waits and tries
again instead of unlinking a file someone is still writing into. The
delivery itself must still be where the placement says, or nothing is
deleted.

``same_fs_move: rename`` (:func:`hash_source`, :func:`place_by_rename`):
the source is hashed once and renamed into place itself, no copy; the
workers' :class:`~ketter.jobs.steps.Attempt` records the hashes and the
source's inode durably between the two, and the deletion that follows finds
the source already gone.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Mapping

from ketter.choices import Kind, Mode
from ketter.errors import PermanentError, SourceInUse, SourceSuperseded
from ketter.mounts import inodes_kept, mount_of, read_mounts
from ketter.paths import readable

from .context import TransferContext
from .copyio import open_source
from .existing import plan_entry
from .hashing import BUF_SIZE, MultiHash, fsync_dir
from .mounts import check_mounts
from .open_writers import describe, open_writers
from .openfile import same_ident
from .oserrors import classify_oserror
from .paths import join, show, split
from .progress import progress_for
from .prune import prune_empty_parents, remove_empty_folder
from .results import CopyResult, DeleteResult, FileHashes, Placement
from .source import FileEntry, SourcePlan, check_unchanged, same_identity
from .spec import TransferSpec


def _same_content(path: bytes, st: os.stat_result, e: FileEntry, delivered: bytes | None) -> bool:
    """Where the filesystem keeps no inode numbers (sshfs, smbnetfs) the
    identity is size + mtime + ctime, all of which a writer can restore on
    sshfs (its ctime is the mtime): the source's bytes are compared with the
    verified delivery's before the source is deleted (issue #15 §1). One
    more read of both, only on such filesystems."""
    if e.ino or delivered is None or inodes_kept(st.st_dev):
        return True
    from .openfile import sha256_of_file  # here: H10's #15 guard, the import block is shared

    mine = sha256_of_file(path)
    return mine is not None and mine == sha256_of_file(delivered)


def _only_metadata_changed(
    path: bytes, st: os.stat_result, e: FileEntry, verified_sha256: str | None
) -> bool:
    """Only the ctime of ``path`` moved since the copy (size, mtime and,
    where kept, the inode are the copied version's) and its bytes still
    hash to ``verified_sha256``, the checksum recorded when the delivery was
    verified: a ``chmod``/``chgrp`` by an operator before a re-queue, which
    used to keep the source and report the move ``completed`` (#15 §1).
    The file must not change while it is hashed (stat before and after)."""
    if (
        verified_sha256 is None
        or not e.ctime_ns
        or (st.st_size, st.st_mtime_ns) != (e.size, e.mtime_ns)
        or (e.ino and st.st_ino != e.ino)
    ):
        return False
    from .openfile import sha256_of_file

    if sha256_of_file(path) != verified_sha256:
        return False
    try:
        after = os.lstat(path)
    except OSError:
        return False
    return (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
    )


def _delete_file(
    path: bytes,
    e: FileEntry,
    res: DeleteResult,
    ctx: TransferContext,
    delivered: bytes | None = None,
    verified_sha256: str | None = None,
) -> None:
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
    if stat.S_ISREG(st.st_mode) and same_identity(st, e):
        keep = not _same_content(path, st, e, delivered)
    else:
        keep = not stat.S_ISREG(st.st_mode) or not _only_metadata_changed(
            path, st, e, verified_sha256
        )
    if keep:
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
    spec: TransferSpec,
    plan: SourcePlan,
    placement: Placement,
    ctx: TransferContext,
    verified: Mapping[bytes, str] | None = None,
) -> DeleteResult:
    """Delete what was moved (idempotent); call only after recording ``placement``.

    ``verified``: the SHA-256 recorded at verification per manifest relpath
    (a single file: its name); a source whose ctime alone changed since is
    deleted only when its bytes still hash to it."""
    sums = verified or {}
    if spec.mode != Mode.MOVE:
        raise PermanentError("delete_source is only for mode 'move'")
    check_mounts(spec, ctx.expected_devs)
    try:
        st = os.lstat(placement.final_path)
    except FileNotFoundError:
        st = None
    # The inode only where the filesystem keeps it: smbnetfs renumbers the
    # delivery after a server restart, which failed a move mid-deletion (#15).
    if st is None or not same_ident(st, (placement.dev, placement.ino)):
        raise PermanentError(
            f"the delivery {show(placement.final_path)} is no longer where it was "
            "placed; the source is kept — check the destination by hand"
        )
    if plan.kind == Kind.FOLDER:
        # Before deleting any member: a unit with a writer still in it (even
        # on a file the manifest does not list) waits whole. Each file is
        # looked at again right before its own unlink (_delete_file).
        _refuse_open_sources(plan)
    res = DeleteResult()
    if plan.kind == Kind.FILE:
        entry = plan_entry(plan)
        _delete_file(plan.path, entry, res, ctx, placement.final_path, sums.get(entry.relpath))
        prune_empty_parents(plan.path, spec.source_root, ctx.warn)  # per-file routes
    else:
        for i, e in enumerate(plan.files):
            if i:
                ctx.fault("between-source-deletes")
            _delete_file(
                plan.entry_path(e),
                e,
                res,
                ctx,
                join(placement.final_path, e.relpath),
                sums.get(e.relpath),
            )
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
    paths = [plan.path] if plan.kind == Kind.FILE else [plan.entry_path(e) for e in plan.files]
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue  # gone already, or unreadable: _delete_file decides
        files.append((st.st_dev, st.st_ino))
    under = [plan.path] if plan.kind == Kind.FOLDER else []
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
    """``src`` can be renamed to ``final``: the same filesystem *and* the same
    mount. Two bind mounts of one filesystem share ``st_dev``, yet a rename
    from one to the other fails with EXDEV; an unreadable mount table is a
    "no" (the caller copies). So is a filesystem that does not keep inode
    numbers (sshfs, smbnetfs: :func:`ketter.mounts.inodes_kept`): a job
    killed between the rename and its record finds its delivery by the
    source's inode."""
    folder = split(final)[0]
    try:
        dev = os.lstat(src).st_dev
        if dev != os.stat(folder).st_dev or not inodes_kept(dev):
            return False
        mounts = read_mounts()
    except OSError:
        return False
    here, there = mount_of(src, mounts), mount_of(folder, mounts)
    return here is not None and there is not None and here.mount_point == there.mount_point


def hash_source(
    spec: TransferSpec,
    plan: SourcePlan,
    final_path: bytes,
    *,
    ctx: TransferContext | None = None,
) -> CopyResult:
    """One read of the source for the record, without copying: the result of
    ``same_fs_move: rename``, whose "temporary" is the source itself
    (``temp_path`` its path, ``temp_id`` its device and inode, nothing copied).

    With a ``ctx`` the bytes hashed are reported as phase ``hash`` (every
    ``spec.checkpoint_bytes``, at least once a second); a stop signal raised
    there ends the read (nothing has been written). Each file is read through
    a descriptor checked against its manifest entry (:func:`.copyio.open_source`),
    and a folder's listing is compared again after the read.
    """
    t0 = time.monotonic()
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
                if ctx is not None:
                    ctx.fault("mid-hash")
                if report is not None:
                    report(done)
        finally:
            os.close(fd)
        return FileHashes(e.relpath, e.size, mh.hexdigests())

    ident = (plan.dev, plan.ino)
    if plan.kind == Kind.FILE:
        fh = one(plan.path, plan_entry(plan))
        return CopyResult(
            plan,
            final_path,
            plan.path,
            spec.verify,
            hashes=fh.hashes,
            seconds=time.monotonic() - t0,
            temp_id=ident,
        )
    files = [one(plan.entry_path(e), e) for e in plan.files]
    check_unchanged(plan)
    return CopyResult(
        plan,
        final_path,
        plan.path,
        spec.verify,
        files=files,
        seconds=time.monotonic() - t0,
        temp_id=ident,
    )


def refuse_open_sources(plan: SourcePlan) -> None:
    """:class:`~ketter.errors.SourceInUse` while a process holds the source
    (or, for a folder, anything below it) open for writing."""
    _refuse_open_sources(plan)


def place_by_rename(spec: TransferSpec, result: CopyResult, ctx: TransferContext) -> Placement:
    """``same_fs_move: rename``: the hashed source (:func:`hash_source`) itself
    renamed into place by the same no-replace placement as a copy, never
    removed on a failure (``own_temp=False``); its mode is ``moved:<mode>``.

    The source becomes the delivery, so it must not be one a writer still
    holds: looked at after the hash (which may take minutes on a large file)
    and right before the rename, a writer that opened it during the hash is
    seen (issue #14 finding 15, review). The placement renames it only while
    its name still holds the inode hashed (``result.temp_id``) and checks the
    final name holds that inode afterwards.
    """
    from .placement import place  # placement imports move's siblings

    check_mounts(spec, ctx.expected_devs)
    _refuse_open_sources(result.plan)
    _check_hashed(result)
    placement = place(spec, result, ctx, own_temp=False)
    if placement.skipped:
        return placement
    return Placement(
        placement.final_path,
        placement.ino,
        placement.dev,
        False,
        "moved:" + placement.mode,
        placement.replaced,
    )


def _check_hashed(result: CopyResult) -> None:
    """The source is still the version hashed (a file rewritten or replaced
    since would be delivered with checksums that are not its own): else
    :class:`~ketter.errors.SourceSuperseded`, and the new version is a job
    of its own."""
    plan = result.plan
    try:
        st = os.lstat(plan.path)
    except FileNotFoundError:
        st = None
    if (
        st is None
        or (st.st_dev, st.st_ino) != result.temp_id
        or (plan.kind == Kind.FILE and not same_identity(st, plan_entry(plan)))
    ):
        raise SourceSuperseded(
            f"source {show(plan.path)} changed or was replaced after it was hashed; "
            "nothing was moved, the new version is a new job"
        )


__all__ = [
    "delete_source",
    "hash_source",
    "join",
    "place_by_rename",
    "refuse_open_sources",
    "same_filesystem",
]
