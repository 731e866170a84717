"""ASC MHL v2 delivery manifests for ``as_unit`` folder jobs (route option ``mhl``).

A new generation (process ``transfer``, hash formats xxh64 and xxh128 from
the copy — MHL has no SHA-256, and the files are never read a second time)
is written into the verified temporary folder's ``ascmhl/`` before the
folder is renamed into place. A source folder that already carries an
``ascmhl/`` history (camera media, dailies) arrives with it (the engine
copies it as part of the folder) and the history is continued; otherwise
generation 1 is created.

Built on the ``ascmhl`` library (pinned 1.2; its model, history rules and
XML writer — never its CLI, which contacts the internet). Ketter names the
generation after the *final* folder name and ``now`` (the library would use
the hidden temporary name and the wall clock) and fsyncs what it wrote
(the library does not).

Names that are not valid UTF-8 cannot be written in the XML; such files are
left out of the generation and listed in the log (their exact bytes and
checksums are in the job store and the audit log).
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from typing import Any

from ascmhl import errors as mhl_errors
from ascmhl.generator import MHLGenerationCreationSession
from ascmhl.hashlist import MHLCreatorInfo, MHLProcess, MHLProcessInfo, MHLTool
from ascmhl.history import MHLHistory
from ascmhl.utils import datetime_isostring

from ketter import __version__
from ketter.engine.beneath import open_parent, step
from ketter.engine.folders import through
from ketter.engine.openfile import swapped
from ketter.engine.paths import split
from ketter.engine.results import CopyResult
from ketter.errors import PermanentError, VerificationFailed
from ketter.paths import readable

log = logging.getLogger("ketter.mhl")

FOLDER = "ascmhl"
FORMATS = ("xxh64", "xxh128")
_FSYNC_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class MHLHistoryDamaged(PermanentError):
    """The source folder's ascmhl/ history is damaged (a generation is missing or
    was modified); repair it, or turn ``mhl`` off on the route, then re-queue."""


class MHLMismatch(PermanentError, VerificationFailed):
    """Files of the folder do not match the checksums its own ascmhl/ history
    recorded earlier (changed since the original offload); nothing was delivered."""


class _DeliveryHistory(MHLHistory):
    """A history whose new generation is named after the final folder and ``now``."""

    folder_name = ""
    stamp = ""

    def _new_generation_filename(self) -> tuple[str, int]:
        index = self.latest_generation_number() + 1
        return f"{index:04d}_{self.folder_name}_{self.stamp}.mhl", index

    def get_relative_file_path(self, file_path: str) -> str | None:
        """The library's answer without ``os.path.relpath`` for plain paths
        below the root (relpath took 0.6 s of 2.3 s for 10,000 files)."""
        if self.asc_mhl_path and os.path.isabs(file_path):
            root = os.path.dirname(self.asc_mhl_path)
            if (
                file_path.startswith(root + "/")
                and len(file_path) > len(root) + 1
                and os.path.normpath(file_path) == file_path
                and os.path.normpath(root) == root
            ):
                return file_path[len(root) + 1 :]
        result: str | None = super().get_relative_file_path(file_path)
        return result


def write_mhl_generation(
    temp_dir: bytes,
    source_dir: bytes,
    result: CopyResult,
    *,
    now: float,
    node: str,
    root: bytes | None = None,
) -> bytes:
    """Write a new ASC MHL generation into ``temp_dir/ascmhl/``; returns its path.

    ``temp_dir`` is the verified copy (``result.temp_path``) not yet placed;
    ``source_dir`` is only read when the copy lacks the source's ``ascmhl/``.
    Raises :class:`MHLHistoryDamaged` or :class:`MHLMismatch` (permanent: the
    job is rolled back, nothing is delivered).

    The ``.dir`` sits in the shared destination folder: anyone who can write
    there can rename it away and put a folder of links under its name
    (``ascmhl -> /elsewhere``), and the library, given that name, wrote the
    MHL files through those links, outside the route (#14 finding 1). So the
    ``.dir`` is opened from ``root`` (the route's destination root; None: its
    folder by name) without following a link, must be the folder the copy
    made (``result.temp_id``, else :class:`~ketter.errors.TemporarySwapped`),
    and the library is given ``/proc/self/fd/N`` of that descriptor: all it
    writes lands below Ketter's own ``0700`` folder.
    """
    fd = _open_temp_dir(temp_dir, result, root)
    try:
        below = through(fd, temp_dir)
        written = _write_generation(below, source_dir, result, now, node)
    finally:
        os.close(fd)
    # Shown under the .dir's name (the descriptor's path means nothing later).
    return temp_dir + written[len(below) :] if written.startswith(below + b"/") else written


def _open_temp_dir(temp_dir: bytes, result: CopyResult, root: bytes | None) -> int:
    """A descriptor of the ``.dir`` the copy made, reached without a link."""
    parent, name = split(temp_dir)
    pfd, _ = open_parent(root, temp_dir)
    try:
        fd = step(pfd, name, parent, create=False)
    except FileNotFoundError:
        raise swapped(temp_dir, "temporary folder") from None
    finally:
        os.close(pfd)
    st = os.fstat(fd)
    if result.temp_id is not None and (st.st_dev, st.st_ino) != result.temp_id:
        os.close(fd)
        raise swapped(temp_dir, "temporary folder")
    return fd


def _write_generation(
    temp_dir: bytes, source_dir: bytes, result: CopyResult, now: float, node: str
) -> bytes:
    """The generation written below ``temp_dir`` (``/proc/self/fd/N``)."""
    root = os.fsdecode(temp_dir)
    source_history = os.path.join(source_dir, FOLDER.encode())
    if not os.path.isdir(os.path.join(root, FOLDER)) and os.path.isdir(source_history):
        shutil.copytree(os.fsdecode(source_history), os.path.join(root, FOLDER))
    try:
        history = _DeliveryHistory.load_from_path(root)
    except (
        mhl_errors.NoMHLChainException,
        mhl_errors.ModifiedMHLManifestFileException,
        mhl_errors.MissingMHLManifestException,
    ) as exc:
        raise MHLHistoryDamaged(
            f"the ascmhl/ history of {readable(source_dir)!r} is damaged ({exc}); repair "
            "it, or turn mhl off on the route, then re-queue"
        ) from exc
    history.folder_name = split(result.final_path)[1].decode("utf-8", "backslashreplace")
    history.stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d_%H%M%SZ")
    when = datetime.fromtimestamp(now)  # the library writes local time with its offset
    session = MHLGenerationCreationSession(history)
    mtimes = {entry.relpath: entry.mtime_ns for entry in result.plan.files}
    skipped: list[str] = []
    failed: list[str] = []
    for fh in result.files:
        if FOLDER.encode() in fh.relpath.split(b"/"):
            continue  # the history itself is not part of the media
        try:
            rel = fh.relpath.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(readable(fh.relpath))
            continue
        mtime = datetime.fromtimestamp(mtimes.get(fh.relpath, 0) / 1e9)
        # One call per format: 1.2's append_multiple_format_file_hashes puts the
        # MHLHashEntry class itself into the list and fails at commit.
        ok = [
            session.append_file_hash(
                os.path.join(root, rel), fh.size, mtime, fmt, fh.hashes[fmt], hash_date=when
            )
            for fmt in FORMATS
        ]
        if not all(ok):
            failed.append(rel)
    if failed:
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise MHLMismatch(
            f"{len(failed)} file(s) of {readable(source_dir)!r} do not match "
            f"their ascmhl/ history: {shown}"
        )
    if skipped:
        log.warning(
            "left out of the MHL generation (names not valid UTF-8): %s",
            ", ".join(skipped[:20]),
            extra={"ketter.mhl_skipped": len(skipped)},
        )
    creator = MHLCreatorInfo()
    creator.host_name = node
    creator.tool = MHLTool("ketter", __version__)
    creator.creation_date = datetime_isostring(when)
    process = MHLProcessInfo()
    process.process = MHLProcess("transfer")
    session.commit(creator, process)
    _fsync_histories(history)
    latest = history.hash_lists[-1]
    return os.fsencode(latest.file_path)


def _fsync_histories(history: Any) -> None:
    """The library closes its files without fsync; the placement rename must not
    publish a folder whose manifest is still only in the page cache."""
    for h in MHLHistory.walk_child_histories(history):
        folder = h.asc_mhl_path
        for name in os.listdir(folder):
            # Never following a link nor blocking on a FIFO (#14 findings 1, 4).
            fd = os.open(os.path.join(folder, name), _FSYNC_FLAGS)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for path in (folder, os.path.dirname(folder)):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
