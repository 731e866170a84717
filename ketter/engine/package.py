"""Big folders as one stored ZIP (R-T8): stream, verify, extract, verify.

Members are stored under index names (``000001`` …), never under their real
names: ``zipfile`` cannot store names that are not UTF-8, restores neither
mode nor mtime, and rejects mtimes before 1980. Real byte names, modes and
mtimes come from the manifest, so zip-slip cannot arise from names at all;
the extractor still refuses anything that is not exactly a manifest member.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import zipfile
from collections.abc import Callable, Sequence

from ketter.errors import PermanentError, SourceChanged

from .beneath import open_parent
from .context import TransferContext
from .copyio import apply_metadata, check_source_final, create_temp, open_source, write_all
from .folders import (
    apply_dir_metadata,
    check_collisions,
    check_temp_dir,
    flush_tree,
    make_dirs,
    make_temp_dir,
    through,
    verify_tree,
)
from .hashing import BUF_SIZE, MultiHash, hash_fd_from_disk
from .openfile import Ident, check_ident, ident_of, open_regular, reopen
from .oserrors import classify_oserror
from .paths import safe_relpath, show
from .progress import Progress, shifted
from .results import FileHashes
from .source import FileEntry, SourcePlan, check_unchanged
from .spec import TransferSpec
from .verify import compare

_INDEX = re.compile(r"[0-9]{6,9}")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def member_name(index: int) -> str:
    return f"{index:06d}"


class _StreamWriter:
    """A write-only, non-seekable sink that hashes what ``zipfile`` writes.

    Being non-seekable makes ``zipfile`` stream (data descriptors) instead
    of seeking back to patch headers, so the running hash is the hash of
    the file's bytes, in order.
    """

    def __init__(self, fd: int, path: bytes, mh: MultiHash) -> None:
        self.fd, self.path, self.mh, self.pos = fd, path, mh, 0

    def write(self, data: bytes | memoryview) -> int:
        mv = memoryview(data)
        self.mh.update(mv)
        write_all(self.fd, mv, self.path)
        self.pos += len(mv)
        return len(mv)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass


def write_package(
    spec: TransferSpec, plan: SourcePlan, zip_path: bytes, ctx: TransferContext, progress: Progress
) -> tuple[list[FileHashes], dict[str, str], Ident]:
    """Stream the manifest into a stored zip64 archive; fsync and verify it
    from disk. Returns (per-file hashes, archive hashes, the archive's
    (st_dev, st_ino): extraction opens only that inode)."""
    algos = tuple(dict.fromkeys((spec.verify, "sha256")))
    zh = MultiHash(algos)
    fd = create_temp(zip_path)
    files: list[FileHashes] = []
    try:
        sink = _StreamWriter(fd, zip_path, zh)
        done = 0
        report = progress.reads("package")
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[call-overload]
            for i, e in enumerate(plan.files, 1):
                files.append(_add_member(spec, zf, i, plan.entry_path(e), e, shifted(report, done)))
                done += e.size
                if i == 1:
                    ctx.fault("mid-copy")
                progress(done, "package")
        os.fsync(fd)
        # Read back through our descriptor, not the name: the archive sits
        # in the shared destination folder, where its name can be swapped.
        rfd = reopen(fd, zip_path)
        try:
            got, _n = hash_fd_from_disk(rfd, (spec.verify,), progress=progress.reads("verify"))
        finally:
            os.close(rfd)
        compare(zip_path, spec.verify, zh.hexdigests()[spec.verify], got[spec.verify])
        ident = ident_of(fd)
    except OSError as exc:
        raise classify_oserror(exc, zip_path, "write the package") from exc
    finally:
        os.close(fd)
    return files, zh.hexdigests(), ident


def _add_member(
    spec: TransferSpec,
    zf: zipfile.ZipFile,
    index: int,
    src: bytes,
    e: FileEntry,
    report: Callable[[int], None] | None = None,
) -> FileHashes:
    zi = zipfile.ZipInfo(member_name(index), date_time=_EPOCH)
    zi.compress_type = zipfile.ZIP_STORED
    zi.file_size = e.size
    zi.external_attr = (stat.S_IFREG | 0o600) << 16
    mh = MultiHash(spec.algorithms)
    sfd = open_source(src, e)
    try:
        total = 0
        with zf.open(zi, "w", force_zip64=e.size >= zipfile.ZIP64_LIMIT) as w:
            while True:
                try:
                    chunk = os.read(sfd, BUF_SIZE)
                except OSError as exc:
                    raise classify_oserror(exc, src, "read the source") from exc
                if not chunk:
                    break
                total += len(chunk)
                if total > e.size:
                    break
                mh.update(chunk)
                w.write(chunk)
                if report is not None:
                    report(total)
        if total != e.size:
            raise SourceChanged(f"source {show(src)} changed size while packaged")
        check_source_final(src, sfd, e)
    finally:
        os.close(sfd)
    return FileHashes(e.relpath, total, mh.hexdigests())


def _reject(zip_path: bytes, why: str) -> PermanentError:
    return PermanentError(
        f"package {show(zip_path)} refused: {why}; it was not "
        "produced by this job (tampering or a bug) — nothing was extracted "
        "outside the temporary folder"
    )


def extract_package(
    zip_path: bytes,
    manifest: Sequence[FileEntry],
    target: bytes,
    progress: Progress | None = None,
    *,
    ident: Ident | None = None,
) -> dict[bytes, Ident]:
    """Extract exactly the manifest's members into the existing ``target``;
    returns each member's (st_dev, st_ino) by relpath.

    The archive is opened without blocking and only if it is a regular file
    and, given ``ident``, the inode written by :func:`write_package`: it
    sits in the shared destination folder for the whole package write, and
    a FIFO swapped in blocked the worker forever (#14 finding 4), another
    archive would have been extracted as ours.

    Refuses (permanent error) any member that is not an index name of the
    manifest — absolute paths, ``..``, links, folders, duplicates, extras,
    wrong sizes, compression — and any manifest member that is missing.
    Real names, modes and mtimes are applied from the manifest.
    """
    seen: set[int] = set()
    written: dict[bytes, Ident] = {}
    zfd = open_regular(zip_path, "open the package", destination=True)
    try:
        check_ident(zfd, ident, zip_path, "package")
    except BaseException:
        os.close(zfd)
        raise
    raw = os.fdopen(zfd, "rb")
    try:
        zf = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError) as exc:
        raw.close()
        raise _reject(zip_path, f"not a readable zip ({exc})") from exc
    with raw, zf:
        infos = zf.infolist()
        for info in infos:
            name = info.orig_filename
            if not _INDEX.fullmatch(name) or info.filename != name:
                raise _reject(zip_path, f"member {name!r} is not a manifest index name")
            idx = int(name)
            if not 1 <= idx <= len(manifest) or idx in seen:
                raise _reject(zip_path, f"member {name!r} is not in the manifest (or repeated)")
            seen.add(idx)
            ftype = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir() or ftype not in (0, stat.S_IFREG):
                raise _reject(zip_path, f"member {name!r} is a link or special file")
            e = manifest[idx - 1]
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != e.size:
                raise _reject(zip_path, f"member {name!r} has the wrong size or compression")
        if len(seen) != len(manifest):
            raise _reject(zip_path, f"{len(manifest) - len(seen)} manifest member(s) missing")
        done = 0
        report = progress.reads("extract") if progress is not None else None
        for info in infos:
            e = manifest[int(info.orig_filename) - 1]
            out = os.path.join(target, safe_relpath(e.relpath))
            fd = create_temp(out)
            try:
                member = 0
                with zf.open(info) as r:  # CRC-32 checked by zipfile at EOF
                    while chunk := r.read(BUF_SIZE):
                        write_all(fd, memoryview(chunk), out)
                        member += len(chunk)
                        if report is not None:
                            report(done + member)
                apply_metadata(fd, e)
                written[e.relpath] = ident_of(fd)
            except zipfile.BadZipFile as exc:
                raise _reject(zip_path, f"member {info.orig_filename!r} is corrupt") from exc
            finally:
                os.close(fd)
            done += e.size
            if progress is not None:
                progress(done, "extract")
    return written


def copy_packaged(
    spec: TransferSpec,
    plan: SourcePlan,
    zip_path: bytes,
    tmpdir: bytes,
    ctx: TransferContext,
    progress: Progress,
) -> tuple[list[FileHashes], dict[str, str], int, Ident]:
    """ZIP to the destination, verify it, extract, verify every member
    against the manifest's SHA-256 from disk, remove the ZIP. Returns
    (per-file hashes, archive hashes, bytes, the ``.dir``'s identity)."""
    files, zip_hashes, zip_id = write_package(spec, plan, zip_path, ctx, progress)
    # Made relative to the destination folder reached again from the root:
    # the whole package write lies between the first check and this mkdir.
    tfd, ident = make_temp_dir(tmpdir, spec.destination_root)
    try:
        target = through(tfd, tmpdir)  # members below our folder, not its name
        check_collisions(target, [e.relpath for e in (*plan.dirs, *plan.files)])
        make_dirs(target, plan.dirs)
        written = extract_package(zip_path, plan.files, target, progress, ident=zip_id)
        files = [dataclasses.replace(f, ident=written.get(f.relpath)) for f in files]
        apply_dir_metadata(target, plan.dirs)
        flush_tree(target, plan.files, plan.dirs)
        verify_tree(target, files, "sha256", set(), progress)
    finally:
        os.close(tfd)
    check_unchanged(plan)
    check_temp_dir(tmpdir, ident)
    # By its name in the folder reached without a link, never through one.
    pfd, zip_name = open_parent(spec.destination_root, zip_path)
    try:
        os.unlink(zip_name, dir_fd=pfd)
    finally:
        os.close(pfd)
    return files, zip_hashes, sum(f.size for f in files), ident
