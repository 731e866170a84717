"""The engine's copy step: ``copy_and_verify`` (and ``identical_result``
for ``skip_identical``).

The job pipeline (the workers' ``Attempt``, which ``ketter transfer`` runs
too: :mod:`ketter.jobs.oneshot`) calls the steps one by one and commits its
state between them; there is no other driver (issue #16 item 4: the
test-only ``transfer()`` that ran them all at once is gone).
"""

from __future__ import annotations

import contextlib
import time

from ketter.choices import Folders, Kind

from .beneath import check_parent
from .cleanup import remove_path
from .context import STOP_SIGNALS, TransferContext
from .copyfile import copy_durable
from .existing import compare_existing, plan_entry
from .mounts import check_mounts
from .oserrors import classify_oserror
from .paths import join, split, temp_name
from .progress import Progress
from .results import CopyResult
from .resume import adopt_partial
from .source import SourcePlan
from .spec import TransferSpec
from .unit import unit_strategy

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
    if plan.kind == Kind.FILE:
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
            copy_path=fc.path,
        )
    if spec.folders != Folders.AS_UNIT:
        raise ValueError("a per_file folder is one job per file (ketter.jobs.submit.submit_path)")
    tmpdir = join(parent, temp_name(ctx.tag, name, "dir"))
    zip_path = join(parent, temp_name(ctx.tag, name, "zip"))
    for stale in (tmpdir, zip_path):
        remove_path(stale)
    strategy = unit_strategy(spec, plan)
    try:
        unit = strategy.copy(spec, plan, tmpdir, zip_path, ctx, progress)
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
        files=unit.files,
        packaged=strategy.packaged,
        package_hashes=unit.package_hashes,
        bytes_copied=unit.size,
        seconds=time.monotonic() - t0,
        temp_id=unit.temp_id,
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
