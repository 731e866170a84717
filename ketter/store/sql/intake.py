"""The SQL job store: intake (see :class:`ketter.store.ports.intake.IntakePort`);
``add_job`` (how each engine meets the unique active ``source_key``) is
the backends'."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ketter.jobs.states import State
from ketter.store.models import TERMINAL_STATES
from ketter.store.ports.intake import KeyedJob
from ketter.store.rows import JobRow
from ketter.store.sql.core import SqlCore

#: Keys per ``IN (...)`` query (SQLite's default variable limit is 32766;
#: smaller batches keep each query short, on both backends).
KEY_BATCH = 500

_NOT_TERMINAL = f"state NOT IN ({', '.join('?' for _ in TERMINAL_STATES)})"
#: The states a job can still leave, named one by one: ``route = ? AND state
#: IN (...)`` is a few lookups in the index jobs_route_state, where ``NOT IN``
#: would read every finished job of the route.
_ACTIVE_STATES = tuple(s.value for s in State if s.value not in TERMINAL_STATES)


class IntakeShared(SqlCore):
    """The intake operations on SQL."""

    @abc.abstractmethod
    def add_job(self, columns: Mapping[str, Any]) -> int | None:
        """The backend's insert with its arbiter (see the port)."""

    def add_jobs(self, rows: Sequence[Mapping[str, Any]]) -> list[int | None]:
        # One insert per row: the backend's add_job (PostgreSQL: one statement).
        return [self.add_job(row) for row in rows]

    def active_job(self, source_key: str) -> JobRow | None:
        found = self._rows(
            f"SELECT * FROM jobs WHERE source_key = ? AND {_NOT_TERMINAL} LIMIT 1",
            (source_key, *TERMINAL_STATES),
        )
        return JobRow(**found[0]) if found else None

    def last_job(self, source_key: str) -> JobRow | None:
        found = self._rows(
            "SELECT * FROM jobs WHERE source_key = ? ORDER BY id DESC LIMIT 1", (source_key,)
        )
        return JobRow(**found[0]) if found else None

    def active_jobs_by_source_path(self, route: str, paths: Iterable[bytes]) -> list[JobRow]:
        paths = [bytes(p) for p in paths]
        found: list[JobRow] = []
        states = ", ".join("?" for _ in _ACTIVE_STATES)
        for i in range(0, len(paths), KEY_BATCH):
            chunk = paths[i : i + KEY_BATCH]
            rows = self._rows(
                f"SELECT * FROM jobs WHERE route = ? AND state IN ({states}) "
                f"AND source_path IN ({', '.join('?' for _ in chunk)})",
                (route, *_ACTIVE_STATES, *chunk),
            )
            found.extend(JobRow(**row) for row in rows)
        return sorted(found, key=lambda row: row.id)

    def jobs_by_source_keys(self, keys: Iterable[str]) -> list[KeyedJob]:
        keys = list(keys)
        found: list[KeyedJob] = []
        for i in range(0, len(keys), KEY_BATCH):
            chunk = keys[i : i + KEY_BATCH]
            marks = ", ".join("?" for _ in chunk)
            rows = self._exec(
                "SELECT DISTINCT source_key, state IN "
                f"({', '.join('?' for _ in TERMINAL_STATES)}), source_ctime_ns, state, sha256 "
                f"FROM jobs WHERE source_key IN ({marks})",
                (*TERMINAL_STATES, *chunk),
            )
            found.extend(
                KeyedJob(key, bool(finished), ctime, state, sha256)
                for key, finished, ctime, state, sha256 in rows
            )
        return found

    def delivered(self, claims: Mapping[int, str]) -> list[JobRow]:
        if not claims:
            return []
        marks = ",".join("?" * len(claims))
        rows = self._rows(f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY id", tuple(claims))
        return [
            JobRow(**row)
            for row in rows
            if row["state"] == "completed" and row["claim"] == claims[row["id"]]
        ]
