"""The manifests area's composite operations, written once: a manifest
replaced and its hashes recorded all or nothing, and the batch's shared
commit (one transaction, one savepoint per job); over the backend's row
statements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence

from ketter.store.composite.core import CompositeCore
from ketter.store.ports.manifests import FILE_HASHES, ManifestFile

#: One file's hashes as :meth:`CompositeManifests._set_file_hashes` writes
#: them: ``(row id, one value per FILE_HASHES name, None when missing)``.
FileHashes = tuple[int, tuple[str | None, ...]]


class CompositeManifests(CompositeCore):
    """Manifests and the batch's commit (see
    :class:`ketter.store.ports.manifests.ManifestsPort`)."""

    @abc.abstractmethod
    def _delete_manifest(self, job_id: int) -> None: ...

    @abc.abstractmethod
    def _insert_manifest(self, job_id: int, files: Iterable[ManifestFile]) -> None:
        """Insert a ``job_files`` row (without hashes) per file."""

    @abc.abstractmethod
    def _manifest_ids(self, job_id: int) -> dict[bytes, int]:
        """The row id of each relpath of the job's manifest."""

    @abc.abstractmethod
    def _set_file_hashes(self, hashes: Sequence[FileHashes]) -> None:
        """Set the :data:`FILE_HASHES` columns of each row."""

    def replace_manifest(self, job_id: int, files: Iterable[ManifestFile]) -> None:
        with self.transaction():
            self._delete_manifest(job_id)
            self._insert_manifest(job_id, files)

    def record_file_hashes(
        self, job_id: int, hashes: Iterable[tuple[bytes, Mapping[str, str]]]
    ) -> None:
        with self.transaction():
            # One pass, by row id: a per-file lookup by relpath would scan the
            # job's manifest for each file (quadratic on 10,000 files). A
            # relpath not in the manifest raises KeyError before any write.
            ids = self._manifest_ids(job_id)
            self._set_file_hashes(
                [
                    (ids[bytes(relpath)], tuple(found.get(name) for name in FILE_HASHES))
                    for relpath, found in hashes
                ]
            )

    def commit_together(
        self, work: Sequence[Callable[[], object]], *, durable: bool = False
    ) -> list[Exception | None]:
        self._ensure_writable()  # before any item runs, on every path
        # At the top level only: inside an open transaction the try would be a
        # savepoint, and a rolled-back one keeps no memory of held-back work.
        # Tried whole first, without a savepoint per item (two statements
        # each, round trips on PostgreSQL): almost always every item holds.
        # One refused: nothing of this try holds, and each runs alone below.
        whole = len(work) > 1 and self.flattens and not self.in_transaction()
        if whole and self._try_whole(work, durable=durable):
            return [None] * len(work)
        outcomes: list[Exception | None] = []
        with self.transaction(durable=durable):
            for item in work:
                try:
                    # A savepoint: a statement that fails in it (a refused
                    # compare-and-set, a failed INSERT) is undone alone; the
                    # transaction goes on (PostgreSQL would abort it without one).
                    with self.transaction():
                        item()
                except Exception as refusal:
                    outcomes.append(refusal)
                else:
                    outcomes.append(None)
        return outcomes

    def _try_whole(self, work: Sequence[Callable[[], object]], *, durable: bool) -> bool:
        """Every item of ``work`` in one transaction, flat (no savepoint
        each); ``False`` when one was refused (then nothing of it holds)."""
        try:
            with self._whole(durable=durable):
                for item in work:
                    try:
                        item()
                    except Exception as refusal:
                        raise _Alone from refusal
                try:
                    settled = self._settle()
                except Exception as failed:
                    raise _Alone from failed
                if not settled:
                    raise _Alone
        except _Alone:
            return False
        return True


class _Alone(Exception):
    """An item of a shared commit tried whole was refused: run each item in
    its own savepoint."""
