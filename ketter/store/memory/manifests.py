"""In-memory job store: manifests (see :class:`ketter.store.ports.manifests.ManifestsPort`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from ketter.store.memory.core import MemoryCore
from ketter.store.ports.manifests import ManifestFile
from ketter.store.rows import JobFileRow


class ManifestsMemory(MemoryCore):
    """The manifests operations in memory."""

    def replace_manifest(self, job_id: int, files: Iterable[ManifestFile]) -> None:
        with self._write():
            table = self.tables.job_files
            for row_id in [i for i, row in table.items() if row.job_id == job_id]:
                del table[row_id]
            for f in files:
                row_id = self.tables.next_id("job_files")
                table[row_id] = JobFileRow(
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

    def manifest(self, job_id: int) -> list[JobFileRow]:
        with self._lock:
            rows = [r for r in self.tables.job_files.values() if r.job_id == job_id]
            return [dataclasses.replace(r) for r in sorted(rows, key=lambda r: r.relpath)]

    def record_file_hashes(
        self, job_id: int, hashes: Iterable[tuple[bytes, Mapping[str, str]]]
    ) -> None:
        with self._write():
            rows = {r.relpath: r for r in self.tables.job_files.values() if r.job_id == job_id}
            for relpath, found in hashes:
                row = rows[bytes(relpath)]  # KeyError: rolled back by _write()
                row.sha256 = found.get("sha256")
                row.xxh128 = found.get("xxh128")
                row.xxh64 = found.get("xxh64")

    def commit_together(self, work: Sequence[Callable[[], object]]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        with self.transaction():
            for item in work:
                try:
                    with self.transaction():  # restores only its own part
                        item()
                except Exception as refusal:
                    outcomes.append(refusal)
                else:
                    outcomes.append(None)
        return outcomes
