"""The job store's intake operations: new jobs (one active job per source
version), and what the watcher, ``ketter enqueue`` and the delivery log ask
about jobs by source key or by claim."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from ketter.store.rows import JobRow

#: The columns a new job must name (NOT NULL without a default in the schema).
REQUIRED_JOB_COLUMNS = frozenset(
    {
        "route",
        "mode",
        "kind",
        "source_path",
        "source_display",
        "source_key",
        "size",
        "file_count",
        "state",
        "attempt",
        "priority",
        "bytes_done",
        "node",
        "created_at",
        "updated_at",
    }
)


def check_job_columns(columns: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise ``ValueError`` for a column the jobs table does not have or a
    required one missing (the SQL is guarded against typos)."""
    unknown = set(columns) - set(known)
    if unknown:
        raise ValueError(f"not a jobs column: {', '.join(sorted(unknown))}")
    missing = {c for c in REQUIRED_JOB_COLUMNS if columns.get(c) is None}
    if missing:
        raise ValueError(f"a job needs: {', '.join(sorted(missing))}")


class KeyedJob(NamedTuple):
    """What the watcher needs to know of a job with a given ``source_key``:
    whether it is finished (terminal), and the ctime and checksum it stored
    (:func:`ketter.watcher.enqueue.settled_keys`)."""

    source_key: str
    finished: bool
    source_ctime_ns: int | None
    state: str
    sha256: str | None


class IntakePort(Protocol):
    """The intake operations of the job store."""

    def add_job(self, columns: Mapping[str, Any]) -> int | None:
        """Insert one job row (column name → value); its new id, or ``None``
        when an active job already holds its ``source_key`` (nothing is
        written and the caller's transaction goes on). An unknown column, or
        a required one (:data:`REQUIRED_JOB_COLUMNS`) missing, raises
        ``ValueError``."""
        ...

    def add_jobs(self, rows: Sequence[Mapping[str, Any]]) -> list[int | None]:
        """:meth:`add_job` for each of ``rows``, in order (a burst of the
        watcher's): their new ids, ``None`` where an active job already
        holds the ``source_key`` (or an earlier row of ``rows`` does). A
        backend may insert them in one statement."""
        ...

    def active_job(self, source_key: str) -> JobRow | None:
        """The non-terminal job with this ``source_key``, if any (one at most)."""
        ...

    def last_job(self, source_key: str) -> JobRow | None:
        """The newest job with this ``source_key``, in any state."""
        ...

    def active_jobs_by_source_path(self, route: str, paths: Iterable[bytes]) -> list[JobRow]:
        """The non-terminal jobs of ``route`` whose ``source_path`` is among
        ``paths`` (any number of paths), by id: whatever version of the
        source they carry. The watcher asks it before it creates a job for a
        folder that changed under a move still working on it (its source
        half deleted after the placement)."""
        ...

    def jobs_by_source_keys(self, keys: Iterable[str]) -> list[KeyedJob]:
        """Every distinct (key, finished, ctime, state, sha256) of the jobs
        whose ``source_key`` is among ``keys`` (any number of keys)."""
        ...

    def delivered(self, claims: Mapping[int, str]) -> list[JobRow]:
        """The jobs among ``claims`` (job id → claim token) that are
        ``completed`` under that very claim, by id."""
        ...


__all__ = ["REQUIRED_JOB_COLUMNS", "IntakePort", "KeyedJob", "check_job_columns"]
