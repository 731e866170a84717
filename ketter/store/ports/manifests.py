"""The job store's manifests operations: the per-file manifest of a folder
job (``job_files``) and the batch's shared commit (:mod:`ketter.jobs.batch`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ketter.store.rows import JobFileRow


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One file to record in a job's manifest (a ``job_files`` row before it
    has an id; its hashes come later, :meth:`ManifestsPort.record_file_hashes`)."""

    relpath: bytes
    relpath_display: str
    size: int
    mtime_ns: int
    mode: int
    inode: int | None = None
    ctime_ns: int | None = None


#: The per-file hashes a manifest keeps (others in a file's hashes are ignored).
FILE_HASHES = ("sha256", "xxh128", "xxh64")


class ManifestsPort(Protocol):
    """The manifests operations of the job store."""

    def replace_manifest(self, job_id: int, files: Iterable[ManifestFile]) -> None:
        """Job ``job_id``'s manifest becomes ``files`` (without hashes), all or
        nothing: the previous one (an earlier attempt's) is gone."""
        ...

    def manifest(self, job_id: int) -> list[JobFileRow]:
        """Job ``job_id``'s manifest ordered by ``relpath`` (bytes order);
        empty for a job without one (or no such job)."""
        ...

    def record_file_hashes(
        self, job_id: int, hashes: Iterable[tuple[bytes, Mapping[str, str]]]
    ) -> None:
        """Record each ``(relpath, {algorithm: hex})`` on job ``job_id``'s
        manifest (:data:`FILE_HASHES`; a missing one recorded as NULL), all or
        nothing: a relpath not in the manifest raises ``KeyError`` and
        nothing is recorded."""
        ...

    def commit_together(
        self, work: Sequence[Callable[[], object]], *, durable: bool = False
    ) -> list[Exception | None]:
        """Run each of ``work`` in its own savepoint of **one** transaction
        (the batch's shared commit); ``durable``: a durable one
        (:meth:`transaction`), on the disk when this returns. One that raises an ``Exception`` is
        rolled back alone (a failed statement in it does not abort the
        others) and its exception is its outcome; ``None`` for the others.
        Anything else raised, or a failed commit, propagates and nothing of
        any of them holds. An item may run twice (a store may first try them
        all without savepoints, and run each alone if one is refused): its
        effects must go through the store (rolled back with the try) or be
        set again by the item itself."""
        ...
