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

A source history made by another tool (camera offload: md5, sha1, c4,
xxh3, …) is continued in its own formats besides Ketter's: ascmhl refuses a
generation whose file lacks the format of its original entry. Formats the
copy computed (``result.files[i].hashes``, e.g. md5 with the route's ``md5``)
are taken from the one read; the others are computed in one more pass over
the verified temporary copy. Any other failure of the library on a given
folder is deterministic: :class:`MHLWriteFailed` is permanent, never retried
(each retry would copy and verify the whole card again).

Names that are not valid UTF-8 cannot be written in the XML. Each such file
(or the first folder of its path that is not valid UTF-8) is named in the
generation's ignore patterns (``processinfo/ignore``): its bytes that are not
UTF-8 become ``?`` (narrowed to ``[!…]`` where a listed name would match
too), so ``ascmhl diff`` and ``ascmhl-debug verify`` accept the folder and the
manifest states what it leaves out. :func:`write_mhl_generation` returns the
names left out; they are logged (their exact bytes and checksums are in the
job store and the audit log). Files the history's own ignore patterns exclude
(``.DS_Store``) are not listed, as ``ascmhl create`` would not list them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pathspec
from ascmhl import errors as mhl_errors
from ascmhl.generator import MHLGenerationCreationSession
from ascmhl.hasher import HashType, new_hasher_for_hash_type
from ascmhl.hashlist import MHLCreatorInfo, MHLProcess, MHLProcessInfo, MHLTool
from ascmhl.history import MHLHistory
from ascmhl.ignore import MHLIgnoreSpec
from ascmhl.utils import datetime_isostring

from ketter import __version__
from ketter.audit.mhl_fresh import Listed, writable, write_fresh
from ketter.engine.beneath import open_parent, step
from ketter.engine.folders import through
from ketter.engine.openfile import swapped
from ketter.engine.paths import split
from ketter.engine.results import CopyResult, FileHashes
from ketter.errors import ManifestError, VerificationFailed
from ketter.paths import readable

log = logging.getLogger("ketter.mhl")

FOLDER = "ascmhl"
#: Ketter's own formats, in every generation (from the copy's one read).
FORMATS = ("xxh64", "xxh128")
#: Every format ascmhl 1.2 reads and writes.
SUPPORTED = tuple(t.name for t in HashType)
_FSYNC_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
#: Characters a ``[!…]`` class of an ignore pattern cannot hold as they are.
_CLASS_SPECIAL = frozenset("]\\[^!-/")


class MHLHistoryDamaged(ManifestError):
    """The source folder's ascmhl/ history is damaged (a generation is missing or
    was modified); repair it, or turn ``mhl`` off on the route, then re-queue."""


class MHLMismatch(ManifestError, VerificationFailed):
    """Files of the folder do not match the checksums its own ascmhl/ history
    recorded earlier (changed since the original offload); nothing was delivered."""


class MHLWriteFailed(ManifestError):
    """The ascmhl library refused to write the folder's new generation; it would
    refuse again on every attempt (fix the folder's ascmhl/ history, or turn
    ``mhl`` off on the route, then re-queue)."""


@dataclass(frozen=True)
class MHLWritten:
    """What :func:`write_generation` wrote."""

    #: The new generation's file (under the ``.dir``'s name).
    path: bytes
    #: Hash formats of the generation: Ketter's and those the history used.
    formats: tuple[str, ...]
    #: Formats not from the copy's read, computed from the verified copy.
    computed: tuple[str, ...] = ()
    #: Paths (relative, ``readable``) left out as not valid UTF-8, and the
    #: ignore patterns that name them in the generation.
    left_out: tuple[str, ...] = ()
    patterns: tuple[str, ...] = field(default=())


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
    """Write a new ASC MHL generation into ``temp_dir/ascmhl/``; returns its path
    (:func:`write_generation` says more)."""
    return write_generation(temp_dir, source_dir, result, now=now, node=node, root=root).path


def write_generation(
    temp_dir: bytes,
    source_dir: bytes,
    result: CopyResult,
    *,
    now: float,
    node: str,
    root: bytes | None = None,
) -> MHLWritten:
    """Write a new ASC MHL generation into ``temp_dir/ascmhl/``.

    ``temp_dir`` is the verified copy (``result.temp_path``) not yet placed;
    ``source_dir`` is only read when the copy lacks the source's ``ascmhl/``.
    Raises :class:`MHLHistoryDamaged`, :class:`MHLMismatch` or
    :class:`MHLWriteFailed` (permanent: the job is rolled back and fails,
    nothing is delivered, it is not retried).

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
    path = written.path
    # Shown under the .dir's name (the descriptor's path means nothing later).
    if path.startswith(below + b"/"):
        path = temp_dir + path[len(below) :]
    return MHLWritten(path, written.formats, written.computed, written.left_out, written.patterns)


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


def history_formats(history: MHLHistory) -> tuple[str, ...]:
    """Every hash format the history (and its nested histories) used, Ketter's
    first; what a new generation must carry so ascmhl can verify each file's
    original entry."""
    seen: dict[str, None] = dict.fromkeys(FORMATS)
    for h in MHLHistory.walk_child_histories(history):
        for hash_list in h.hash_lists:
            for media_hash in hash_list.media_hashes:
                for entry in media_hash.hash_entries:
                    seen.setdefault(str(entry.hash_format), None)
    return tuple(seen)


def _write_generation(
    temp_dir: bytes, source_dir: bytes, result: CopyResult, now: float, node: str
) -> MHLWritten:
    """The generation written below ``temp_dir`` (``/proc/self/fd/N``)."""
    root = os.fsdecode(temp_dir)
    source_history = os.path.join(source_dir, FOLDER.encode())
    if _without_history(root, source_history, result):
        fresh = _write_fresh(root, source_dir, result, now, node)
        if fresh is not None:
            return fresh
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
    except OSError:
        raise
    except Exception as exc:  # the library's own failure on this history: deterministic
        raise MHLWriteFailed(
            f"the ascmhl/ history of {readable(source_dir)!r} cannot be read ({exc!r}); "
            "repair it, or turn mhl off on the route, then re-queue"
        ) from exc
    formats = history_formats(history)
    unknown = [f for f in formats if f not in SUPPORTED]
    if unknown:
        raise MHLWriteFailed(
            f"the ascmhl/ history of {readable(source_dir)!r} uses hash format(s) "
            f"{', '.join(unknown)} that ascmhl cannot compute; turn mhl off on the route, "
            "then re-queue"
        )
    history.folder_name = split(result.final_path)[1].decode("utf-8", "backslashreplace")
    history.stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d_%H%M%SZ")
    when = datetime.fromtimestamp(now)  # the library writes local time with its offset
    final_root = os.fsdecode(result.final_path)
    members = [fh for fh in result.files if FOLDER.encode() not in fh.relpath.split(b"/")]
    left_out, patterns = _undecodable(members)
    spec = MHLIgnoreSpec(history.latest_ignore_patterns(), patterns)
    # ascmhl's own factory name ("gitwildmatch") is a deprecated alias of this
    # one in pathspec 1.x (a DeprecationWarning on every call).
    ignored = pathspec.PathSpec.from_lines("gitignore", spec.get_pattern_list())
    session = MHLGenerationCreationSession(history, spec)
    mtimes = {entry.relpath: entry.mtime_ns for entry in result.plan.files}
    failed: list[str] = []
    computed: set[str] = set()
    for fh in members:
        try:
            rel = fh.relpath.decode("utf-8")
        except UnicodeDecodeError:
            continue  # named by an ignore pattern above
        if _excluded(ignored, final_root, rel):
            continue  # .DS_Store and the like: ascmhl would not list it either
        hashes = {f: fh.hashes[f] for f in formats if f in fh.hashes}
        missing = [f for f in formats if f not in hashes]
        if missing:
            hashes.update(_hash_copy(root, rel, fh, missing))
            computed.update(missing)
        mtime = datetime.fromtimestamp(mtimes.get(fh.relpath, 0) / 1e9)
        path = os.path.join(root, rel)
        try:
            # The formats ascmhl checks ("verified" against the original
            # entry) before the ones new to this file, one call per format:
            # 1.2's append_multiple_format_file_hashes puts the MHLHashEntry
            # class itself into the list and fails at commit.
            ok = [
                session.append_file_hash(path, fh.size, mtime, f, hashes[f], hash_date=when)
                for f in formats
            ]
        except OSError:
            raise
        except Exception as exc:
            raise _write_failed(source_dir, exc) from exc
        if not all(ok):
            failed.append(rel)
    if failed:
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise MHLMismatch(
            f"{len(failed)} file(s) of {readable(source_dir)!r} do not match "
            f"their ascmhl/ history: {shown}"
        )
    _log_left_out(left_out, patterns)
    creator = MHLCreatorInfo()
    creator.host_name = node
    creator.tool = MHLTool("ketter", __version__)
    creator.creation_date = datetime_isostring(when)
    process = MHLProcessInfo()
    process.process = MHLProcess("transfer")
    try:
        session.commit(creator, process)
    except OSError:
        raise
    except Exception as exc:  # e.g. AssertionError('no hash entry found for new hash')
        raise _write_failed(source_dir, exc) from exc
    _fsync_histories(history)
    latest = history.hash_lists[-1]
    return MHLWritten(
        os.fsencode(latest.file_path),
        formats,
        tuple(f for f in formats if f in computed),
        tuple(left_out),
        tuple(patterns),
    )


def _without_history(root: str, source_history: bytes, result: CopyResult) -> bool:
    """No ``ascmhl/`` history anywhere in the folder (nor at the source's root)."""
    if os.path.lexists(os.path.join(root, FOLDER)) or os.path.lexists(source_history):
        return False
    name = FOLDER.encode()
    return not any(name in e.relpath.split(b"/") for e in (*result.plan.files, *result.plan.dirs))


def _write_fresh(
    root: str, source_dir: bytes, result: CopyResult, now: float, node: str
) -> MHLWritten | None:
    """Generation 1 of a folder without a history, written by
    :func:`~ketter.audit.mhl_fresh.write_fresh` (the same bytes as the
    library, without its model); None: a name the XML cannot carry, left to
    the library (which refuses it)."""
    final_root = os.fsdecode(result.final_path)
    members = list(result.files)
    left_out, patterns = _undecodable(members)
    pattern_list = MHLIgnoreSpec(None, patterns).get_pattern_list()
    ignored = pathspec.PathSpec.from_lines("gitignore", pattern_list)
    mtimes = {entry.relpath: entry.mtime_ns for entry in result.plan.files}
    listed: list[Listed] = []
    computed: set[str] = set()
    for fh in members:
        try:
            rel = fh.relpath.decode("utf-8")
        except UnicodeDecodeError:
            continue  # named by an ignore pattern
        if _excluded(ignored, final_root, rel):
            continue
        hashes = {f: fh.hashes[f] for f in FORMATS if f in fh.hashes}
        missing = [f for f in FORMATS if f not in hashes]
        if missing:
            hashes.update(_hash_copy(root, rel, fh, missing))
            computed.update(missing)
        listed.append(Listed(rel, fh.size, mtimes.get(fh.relpath, 0), hashes))
    folder_name = split(result.final_path)[1].decode("utf-8", "backslashreplace")
    if not writable([folder_name, node, *(f.rel for f in listed)]):
        return None
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d_%H%M%SZ")
    folder = os.path.join(root, FOLDER)
    path = write_fresh(
        folder,
        f"0001_{folder_name}_{stamp}.mhl",
        listed,
        FORMATS,
        pattern_list,
        when=datetime.fromtimestamp(now),  # the library writes local time with its offset
        node=node,
        tool=("ketter", __version__),
    )
    _log_left_out(left_out, patterns)
    _fsync_folder(folder)
    return MHLWritten(
        os.fsencode(path),
        FORMATS,
        tuple(f for f in FORMATS if f in computed),
        tuple(left_out),
        tuple(patterns),
    )


def _log_left_out(left_out: list[str], patterns: list[str]) -> None:
    if left_out:
        log.warning(
            "left out of the MHL generation (names not valid UTF-8), named by its ignore "
            "patterns %s: %s",
            ", ".join(patterns),
            ", ".join(left_out[:20]),
            extra={"ketter.mhl_skipped": len(left_out)},
        )


def _write_failed(source_dir: bytes, exc: Exception) -> MHLWriteFailed:
    return MHLWriteFailed(
        f"ascmhl cannot write a generation for {readable(source_dir)!r} ({exc!r}); fix "
        "its ascmhl/ history, or turn mhl off on the route, then re-queue"
    )


def _excluded(ignored: pathspec.PathSpec, final_root: str, rel: str) -> bool:
    """Whether ascmhl, walking the delivered folder, skips ``rel``: the file or
    one of its folders matches an ignore pattern (as ``post_order_lexicographic``
    matches them: absolute paths, folders with a trailing ``/``)."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        path = os.path.join(final_root, *parts[:i]) + ("/" if i < len(parts) else "")
        if ignored.match_file(path):
            return True
    return False


def _hash_copy(root: str, rel: str, fh: FileHashes, formats: list[str]) -> dict[str, str]:
    """``formats`` of one member of the verified copy, in one pass."""
    try:
        hashers = {f: new_hasher_for_hash_type(f) for f in formats}
    except Exception as exc:
        raise MHLWriteFailed(f"ascmhl cannot compute {formats}: {exc!r}") from exc
    fd = os.open(os.path.join(root, rel), _READ_FLAGS)
    try:
        st = os.fstat(fd)
        if fh.ident is not None and (st.st_dev, st.st_ino) != fh.ident:
            raise swapped(os.fsencode(rel), "copied file")
        while chunk := os.read(fd, _CHUNK):
            for h in hashers.values():
                h.update(chunk)
    finally:
        os.close(fd)
    return {f: h.string_digest() for f, h in hashers.items()}


def _undecodable(members: Iterable[FileHashes]) -> tuple[list[str], list[str]]:
    """The members whose path is not valid UTF-8 (shown) and the ignore
    patterns that name them (each for the file, or for the first folder of its
    path that is not valid UTF-8), narrowed so that no listed path matches."""
    bad: dict[tuple[str, ...], bool] = {}  # components up to the bad one -> is a folder
    shown: list[str] = []
    valid: set[tuple[str, ...]] = set()
    for fh in members:
        parts = fh.relpath.split(b"/")
        texts = [p.decode("utf-8", "surrogateescape") for p in parts]
        first = next((i for i, p in enumerate(parts) if not _is_utf8(p)), None)
        if first is None:
            valid.update(tuple(texts[:i]) for i in range(1, len(texts) + 1))
            continue
        shown.append(readable(fh.relpath))
        key = tuple(texts[: first + 1])
        bad[key] = bad.get(key, False) or first < len(parts) - 1
    patterns = [p for key, folder in bad.items() if (p := _pattern(key, folder, valid))]
    return shown, patterns


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _pattern(key: tuple[str, ...], folder: bool, valid: set[tuple[str, ...]]) -> str | None:
    """A gitwildmatch pattern (ascmhl's) matching the path ``key`` at any depth;
    each byte that is not UTF-8 (a lone surrogate here) matches one character
    other than those listed paths have there. None: not expressible (a listed
    path differs there only by a character a class cannot hold)."""
    width = [len(c) for c in key]
    collide: list[tuple[str, ...]] = []
    for path in valid:
        tail = path[-len(key) :]
        if len(tail) == len(key) and [len(c) for c in tail] == width and _same(key, tail):
            collide.append(tail)
    comps: list[str] = []
    for j, comp in enumerate(key):
        out: list[str] = []
        for p, ch in enumerate(comp):
            if "\udc80" <= ch <= "\udcff":
                others = sorted({t[j][p] for t in collide})
                if any(o in _CLASS_SPECIAL for o in others):
                    return None
                out.append(f"[!{''.join(others)}]" if others else "?")
            elif ch in "*?[\\" or (p == 0 and ch in "!#"):
                out.append("\\" + ch)
            else:
                out.append(ch)
        comps.append("".join(out))
    text = "/".join(comps)
    if len(key) > 1:
        text = "**/" + text
    return text + "/" if folder else text


def _same(key: tuple[str, ...], other: tuple[str, ...]) -> bool:
    """``other`` equals ``key`` but where ``key`` has a byte that is not UTF-8."""
    return all(
        a == b or "\udc80" <= a <= "\udcff"
        for c, d in zip(key, other, strict=True)
        for a, b in zip(c, d, strict=True)
    )


def _fsync_histories(history: Any) -> None:
    """The library closes its files without fsync; the placement rename must not
    publish a folder whose manifest is still only in the page cache."""
    for h in MHLHistory.walk_child_histories(history):
        _fsync_folder(h.asc_mhl_path)


def _fsync_folder(folder: str) -> None:
    """Every file of one ``ascmhl/`` folder, the folder and its parent."""
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
