"""The SQL job store: manifests (see :class:`ketter.store.ports.manifests.ManifestsPort`);
the replace, the hashes' record and the batch's commit are
:mod:`ketter.store.composite.manifests`, over the statements here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ketter.store.composite.manifests import CompositeManifests, FileHashes
from ketter.store.ports.manifests import FILE_HASHES, ManifestFile
from ketter.store.rows import JOB_FILE_COLUMNS, JobFileRow
from ketter.store.sql.core import SqlCore

_INSERT_FILE = (
    "INSERT INTO job_files (job_id, relpath, relpath_display, size, mtime_ns, mode, "
    "inode, ctime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_MANIFEST = "SELECT {} FROM job_files WHERE job_id = ? ORDER BY relpath".format(
    ", ".join(f'"{name}"' for name in JOB_FILE_COLUMNS)
)
_SET_HASHES = "UPDATE job_files SET {} WHERE id = ?".format(
    ", ".join(f'"{name}" = ?' for name in FILE_HASHES)
)


class ManifestsShared(SqlCore, CompositeManifests):
    """The manifests rows on SQL."""

    def _delete_manifest(self, job_id: int) -> None:
        self._exec("DELETE FROM job_files WHERE job_id = ?", (job_id,))

    def _insert_manifest(self, job_id: int, files: Iterable[ManifestFile]) -> None:
        self.db.cursor().executemany(
            self.dialect.sql(_INSERT_FILE),
            [
                (
                    job_id,
                    f.relpath,
                    f.relpath_display,
                    f.size,
                    f.mtime_ns,
                    f.mode,
                    f.inode,
                    f.ctime_ns,
                )
                for f in files
            ],
        )

    def _manifest_ids(self, job_id: int) -> dict[bytes, int]:
        return {
            bytes(rel): row_id
            for row_id, rel in self._exec(
                "SELECT id, relpath FROM job_files WHERE job_id = ?", (job_id,)
            )
        }

    def _set_file_hashes(self, hashes: Sequence[FileHashes]) -> None:
        self.db.cursor().executemany(
            self.dialect.sql(_SET_HASHES), [(*values, row_id) for row_id, values in hashes]
        )

    def manifest(self, job_id: int) -> list[JobFileRow]:
        rows = self._rows(_SELECT_MANIFEST, (job_id,))
        for row in rows:
            row["relpath"] = bytes(row["relpath"])
        return [JobFileRow(**row) for row in rows]
