"""In-memory job store: manifests (see :class:`ketter.store.ports.manifests.ManifestsPort`);
the replace, the hashes' record and the batch's commit are
:mod:`ketter.store.composite.manifests`, over the rows here."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from ketter.store.composite.manifests import CompositeManifests, FileHashes
from ketter.store.memory.core import MemoryCore
from ketter.store.ports.manifests import FILE_HASHES, ManifestFile
from ketter.store.rows import JobFileRow


class ManifestsMemory(MemoryCore, CompositeManifests):
    """The manifests rows in memory."""

    def _delete_manifest(self, job_id: int) -> None:
        with self._write():
            table = self.tables.job_files
            for row_id in [i for i, row in table.items() if row.job_id == job_id]:
                del table[row_id]

    def _insert_manifest(self, job_id: int, files: Iterable[ManifestFile]) -> None:
        with self._write():
            for f in files:
                row_id = self.tables.next_id("job_files")
                self.tables.job_files[row_id] = JobFileRow(
                    id=row_id,
                    job_id=job_id,
                    relpath=bytes(f.relpath),
                    relpath_display=f.relpath_display,
                    size=f.size,
                    mtime_ns=f.mtime_ns,
                    mode=f.mode,
                    inode=f.inode,
                    ctime_ns=f.ctime_ns,
                )

    def _manifest_ids(self, job_id: int) -> dict[bytes, int]:
        with self._lock:
            return {r.relpath: r.id for r in self.tables.job_files.values() if r.job_id == job_id}

    def _set_file_hashes(self, hashes: Sequence[FileHashes]) -> None:
        with self._write():
            for row_id, values in hashes:
                row = self.tables.job_files[row_id]
                for name, value in zip(FILE_HASHES, values, strict=True):
                    setattr(row, name, value)

    def manifest(self, job_id: int) -> list[JobFileRow]:
        with self._lock:
            rows = [r for r in self.tables.job_files.values() if r.job_id == job_id]
            return [dataclasses.replace(r) for r in sorted(rows, key=lambda r: r.relpath)]
