"""SQLite job store: manifests (see :class:`ketter.store.ports.manifests.ManifestsPort`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from ketter.store.ports.manifests import ManifestFile
from ketter.store.rows import JOB_FILE_COLUMNS, JobFileRow
from ketter.store.sqlite.core import SqliteCore

_INSERT_FILE = (
    "INSERT INTO job_files (job_id, relpath, relpath_display, size, mtime_ns, mode, "
    "inode, ctime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_MANIFEST = "SELECT {} FROM job_files WHERE job_id = ? ORDER BY relpath".format(
    ", ".join(f'"{name}"' for name in JOB_FILE_COLUMNS)
)


class ManifestsSql(SqliteCore):
    """The manifests operations on SQLite."""

    def replace_manifest(self, job_id: int, files: Iterable[ManifestFile]) -> None:
        db = self.db
        with db.atomic():
            db.execute_sql("DELETE FROM job_files WHERE job_id = ?", (job_id,))
            db.cursor().executemany(
                _INSERT_FILE,
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

    def manifest(self, job_id: int) -> list[JobFileRow]:
        rows = self._rows(_SELECT_MANIFEST, (job_id,))
        for row in rows:
            row["relpath"] = bytes(row["relpath"])
        return [JobFileRow(**row) for row in rows]

    def record_file_hashes(
        self, job_id: int, hashes: Iterable[tuple[bytes, Mapping[str, str]]]
    ) -> None:
        db = self.db
        with db.atomic():
            # One pass, by row id: a per-file UPDATE … WHERE relpath = ? would
            # scan the job's manifest for each file (quadratic on 10,000 files).
            ids = {
                bytes(rel): row_id
                for row_id, rel in db.execute_sql(
                    "SELECT id, relpath FROM job_files WHERE job_id = ?", (job_id,)
                )
            }
            db.cursor().executemany(
                "UPDATE job_files SET sha256 = ?, xxh128 = ?, xxh64 = ? WHERE id = ?",
                [
                    (
                        found.get("sha256"),
                        found.get("xxh128"),
                        found.get("xxh64"),
                        ids[bytes(relpath)],
                    )
                    for relpath, found in hashes
                ],
            )

    def commit_together(self, work: Sequence[Callable[[], object]]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        db = self.db
        with db.atomic():
            for item in work:
                try:
                    # A savepoint: a statement that fails in it (a refused
                    # compare-and-set, a failed INSERT) is undone alone; the
                    # transaction goes on (PostgreSQL would abort it without one).
                    with db.atomic():
                        item()
                except Exception as refusal:
                    outcomes.append(refusal)
                else:
                    outcomes.append(None)
        return outcomes
