"""The engine's steps glued together: ``copy_and_verify`` and ``transfer``.

The job pipeline (the workers' ``Attempt``, which ``ketter transfer`` runs
too: :mod:`ketter.jobs.oneshot`) calls the steps one by one and commits its
state between them. :func:`transfer` runs them all at once and only tests
call it: the ``same_fs_move: rename`` tests, until the workers' path does
the rename (issue #16 item 4); every other test uses the workers' path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable

from .beneath import check_parent, make_dirs, parent_fd
from .cleanup import remove_path
from .context import STOP_SIGNALS, TransferContext
from .copyfile import copy_durable
from .existing import compare_existing, plan_entry
from .folders import apply_dir_metadata, copy_folder
from .mounts import check_mounts
from .move import delete_source, move_by_rename, same_filesystem
from .oserrors import classify_oserror
from .package import copy_packaged
from .paths import join, safe_relpath, split, temp_name
from .placement import place
from .progress import Progress
from .results import CopyResult, DeleteResult, Placement, TransferOutcome
from .resume import adopt_partial
from .source import SourcePlan, inspect_source, resolve_destination
from .spec import TransferSpec

#: Stop signals keep a file's partial (a later claim may resume it); every
#: other failure, and any stop of a folder (which cannot be resumed), removes
#: the temporaries so nothing half-done is left behind.
_KEEP_PARTIAL = STOP_SIGNALS


def copy_and_verify(
    spec: TransferSpec,
    plan: SourcePlan,
    final_path: bytes,
    ctx: TransferContext,
    *,
    resume: bool = False,
) -> CopyResult:
    """Copy ``plan`` beside ``final_path`` under a temporary name, durable and
    verified from disk. Folders need ``folders: as_unit`` (a per-file folder
    is one job per file: :func:`ketter.jobs.submit.submit_path`)."""
    t0 = time.monotonic()
    check_mounts(spec, ctx.expected_devs)
    parent, name = split(final_path)
    try:
        # A link swapped in for a destination folder since the job was
        # validated fails here, before a temporary is written through it.
        check_parent(spec.destination_root, final_path)
    except OSError as exc:
        raise classify_oserror(exc, parent, "open the destination folder") from exc
    progress = Progress(ctx, step=spec.checkpoint_bytes)
    if plan.kind == "file":
        tmp = join(parent, temp_name(ctx.tag, name, "part"))
        resumed = adopt_partial(spec, ctx, tmp, name) if resume else False
        if not resumed:
            remove_path(tmp)
        try:
            fc = copy_durable(
                spec, ctx, plan.path, plan_entry(plan), tmp, progress=progress, resume=resumed
            )
        except _KEEP_PARTIAL:
            raise
        except BaseException as exc:
            remove_path(tmp)
            if isinstance(exc, OSError):
                raise classify_oserror(exc, tmp, "copy to the temporary file") from exc
            raise
        ctx.fault("after-fsync-before-place")
        return CopyResult(
            plan,
            final_path,
            tmp,
            spec.verify,
            hashes=fc.hashes,
            bytes_copied=fc.size - fc.resumed_from,
            resumed_from=fc.resumed_from,
            seconds=time.monotonic() - t0,
            temp_id=fc.ident,
        )
    if spec.folders != "as_unit":
        raise ValueError("a per_file folder is one transfer per file: use per_file_items()")
    tmpdir = join(parent, temp_name(ctx.tag, name, "dir"))
    zip_path = join(parent, temp_name(ctx.tag, name, "zip"))
    for stale in (tmpdir, zip_path):
        remove_path(stale)
    packaged = 0 < spec.package_min_files <= len(plan.files)
    try:
        if packaged:
            files, zip_hashes, size, temp_id = copy_packaged(
                spec, plan, zip_path, tmpdir, ctx, progress
            )
        else:
            files, size, temp_id = copy_folder(spec, plan, tmpdir, ctx, progress)
            zip_hashes = {}
    except _KEEP_PARTIAL:
        # A folder cannot be resumed. Another claim may be rolling the job
        # back at the same time: a cleanup error must not hide the signal.
        for stale in (tmpdir, zip_path):
            with contextlib.suppress(OSError):
                remove_path(stale)
        raise
    except BaseException as exc:
        remove_path(tmpdir)
        remove_path(zip_path)
        if isinstance(exc, OSError):
            raise classify_oserror(exc, tmpdir, "copy the folder") from exc
        raise
    ctx.fault("after-fsync-before-place")
    return CopyResult(
        plan,
        final_path,
        tmpdir,
        spec.verify,
        files=files,
        packaged=packaged,
        package_hashes=zip_hashes,
        bytes_copied=size,
        seconds=time.monotonic() - t0,
        temp_id=temp_id,
    )


def identical_result(
    spec: TransferSpec,
    plan: SourcePlan,
    final_path: bytes,
    *,
    ctx: TransferContext | None = None,
) -> CopyResult | None:
    """A skipped result when ``skip_identical`` finds the same content at the
    destination (source hashed once, destination not touched), else None.

    Pass the job's ``ctx``: both sides are read in full, reported as phase
    ``compare``; ``LostClaim``/``ShutdownRequested`` raised by its progress
    stop the comparison (nothing is written, so nothing is left behind)."""
    identity: list[tuple[int, int]] = []
    state, hashes, files = compare_existing(spec, plan, final_path, ctx=ctx, identity=identity)
    if state != "identical":
        return None
    return CopyResult(
        plan,
        final_path,
        b"",
        spec.verify,
        hashes=hashes,
        files=files,
        skipped=True,
        existing=identity[0],
    )


def per_file_items(plan: SourcePlan, final_root: bytes) -> list[tuple[SourcePlan, bytes]]:
    """``folders: per_file``: one (file plan, final path) per manifest file;
    the relative tree is kept, never flattened."""
    items = []
    for e in plan.files:
        sub = SourcePlan(
            path=plan.entry_path(e),
            kind="file",
            size=e.size,
            mtime_ns=e.mtime_ns,
            ino=e.ino,
            dev=plan.dev,
            mode=e.mode,
            ctime_ns=e.ctime_ns,
        )
        items.append((sub, join(final_root, safe_relpath(e.relpath))))
    return items


OnPlaced = Callable[[Placement, CopyResult], None]


def _one(
    spec: TransferSpec,
    plan: SourcePlan,
    final: bytes,
    ctx: TransferContext,
    on_placed: OnPlaced | None,
) -> tuple[CopyResult, Placement, DeleteResult | None]:
    result: CopyResult | None = None
    if spec.mode == "move" and spec.same_fs_move == "rename" and same_filesystem(plan.path, final):
        result, placement = move_by_rename(spec, plan, final, ctx)
    else:
        if spec.conflict == "skip_identical":
            result = identical_result(spec, plan, final, ctx=ctx)
        if result is None:
            result = copy_and_verify(spec, plan, final, ctx, resume=True)
        placement = place(spec, result, ctx)
    if on_placed is not None:
        on_placed(placement, result)
    deleted = delete_source(spec, plan, placement, ctx) if spec.mode == "move" else None
    return result, placement, deleted


def transfer(
    spec: TransferSpec,
    src: bytes,
    dst: bytes,
    ctx: TransferContext,
    *,
    on_placed: OnPlaced | None = None,
) -> TransferOutcome:
    """Run every step for one source; ``on_placed(placement, result)`` runs
    before any source is deleted so the caller can record the placement.
    Test-only (module docstring)."""
    t0 = time.monotonic()
    devs = check_mounts(spec, ctx.expected_devs)
    if ctx.expected_devs is None:
        ctx.expected_devs = devs
    plan = inspect_source(spec, src)
    for rel, why in plan.skipped:
        ctx.warn("source_entry_skipped", path=rel, reason=why)
    final = resolve_destination(spec, plan, dst)
    if plan.kind == "file" or spec.folders == "as_unit":
        result, placement, deleted = _one(spec, plan, final, ctx, on_placed)
        return TransferOutcome(
            plan,
            placement.final_path,
            [result],
            [placement],
            deleted,
            result.bytes_copied,
            time.monotonic() - t0,
        )
    results, placements = [], []
    deleted = DeleteResult() if spec.mode == "move" else None
    sub_spec = dataclasses.replace(spec, ready_marker=None)
    check_mounts(spec, ctx.expected_devs)
    try:
        # Never through a link planted in the destination tree (#14 finding 1).
        make_dirs(spec.destination_root, final)
        for entry in plan.dirs:
            make_dirs(spec.destination_root or final, join(final, safe_relpath(entry.relpath)))
    except OSError as exc:
        raise classify_oserror(exc, final, "create the destination folders") from exc
    for sub, sub_final in per_file_items(plan, final):
        r, p, d = _one(sub_spec, sub, sub_final, ctx, on_placed)
        results.append(r)
        placements.append(p)
        if deleted is not None and d is not None:
            for f in dataclasses.fields(d):
                getattr(deleted, f.name).extend(getattr(d, f.name))
    try:
        apply_dir_metadata(final, plan.dirs, root=spec.destination_root)
        with parent_fd(spec.destination_root, join(final, b"x")) as fd:
            os.utime(fd, ns=(plan.mtime_ns, plan.mtime_ns))
    except OSError as exc:
        ctx.warn("folder_metadata_not_applied", path=final, error=str(exc))
    if spec.mode == "move":
        st = os.lstat(final)
        root_placement = Placement(final, st.st_ino, st.st_dev, False, "per_file")
        d = delete_source(spec, plan, root_placement, ctx)
        assert deleted is not None
        deleted.kept.extend(d.kept)
    return TransferOutcome(
        plan,
        final,
        results,
        placements,
        deleted,
        sum(r.bytes_copied for r in results),
        time.monotonic() - t0,
    )
