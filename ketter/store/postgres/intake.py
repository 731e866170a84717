"""PostgreSQL job store: intake (see :class:`ketter.store.ports.intake.IntakePort`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from ketter.jobs.states import State
from ketter.store.models import TERMINAL_STATES
from ketter.store.ports.intake import KeyedJob, check_job_columns
from ketter.store.postgres.core import PgCore
from ketter.store.rows import JOB_COLUMNS, JobRow

#: Keys per ``IN (...)`` query (short statements).
KEY_BATCH = 500

#: The predicate of the partial unique index jobs_active_source_key.
_ACTIVE_KEY = "state NOT IN ({})".format(", ".join(f"'{s}'" for s in TERMINAL_STATES))
_NOT_TERMINAL = f"state NOT IN ({', '.join('%s' for _ in TERMINAL_STATES)})"
#: The states a job can still leave, named one by one: ``route = %s AND state
#: IN (...)`` is a few lookups in the index jobs_route_state, where ``NOT IN``
#: would read every finished job of the route.
_ACTIVE_STATES = tuple(s.value for s in State if s.value not in TERMINAL_STATES)


class IntakePg(PgCore):
    """The intake operations on PostgreSQL."""

    def add_job(self, columns: Mapping[str, Any]) -> int | None:
        check_job_columns(columns, JOB_COLUMNS)
        # Raw SQL: the watcher creates thousands of jobs in a burst. A failed
        # statement would abort the whole transaction on PostgreSQL, so the
        # partial unique index jobs_active_source_key is the conflict's
        # arbiter: a second active job with this key is not inserted (no
        # look first, no error); any other constraint still raises.
        row = self.db.execute_sql(_insert_sql(tuple(columns)), tuple(columns.values())).fetchone()
        return None if row is None else int(row[0])

    def active_job(self, source_key: str) -> JobRow | None:
        found = self._rows(
            f"SELECT * FROM jobs WHERE source_key = %s AND {_NOT_TERMINAL} LIMIT 1",
            (source_key, *TERMINAL_STATES),
        )
        return JobRow(**found[0]) if found else None

    def last_job(self, source_key: str) -> JobRow | None:
        found = self._rows(
            "SELECT * FROM jobs WHERE source_key = %s ORDER BY id DESC LIMIT 1", (source_key,)
        )
        return JobRow(**found[0]) if found else None

    def active_jobs_by_source_path(self, route: str, paths: Iterable[bytes]) -> list[JobRow]:
        paths = [bytes(p) for p in paths]
        found: list[JobRow] = []
        states = ", ".join("%s" for _ in _ACTIVE_STATES)
        for i in range(0, len(paths), KEY_BATCH):
            chunk = paths[i : i + KEY_BATCH]
            rows = self._rows(
                f"SELECT * FROM jobs WHERE route = %s AND state IN ({states}) "
                f"AND source_path IN ({', '.join('%s' for _ in chunk)})",
                (route, *_ACTIVE_STATES, *chunk),
            )
            found.extend(JobRow(**row) for row in rows)
        return sorted(found, key=lambda row: row.id)

    def jobs_by_source_keys(self, keys: Iterable[str]) -> list[KeyedJob]:
        keys = list(keys)
        found: list[KeyedJob] = []
        for i in range(0, len(keys), KEY_BATCH):
            chunk = keys[i : i + KEY_BATCH]
            marks = ", ".join("%s" for _ in chunk)
            rows = self.db.execute_sql(
                "SELECT DISTINCT source_key, state IN "
                f"({', '.join('%s' for _ in TERMINAL_STATES)}), source_ctime_ns, state, sha256 "
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
        marks = ", ".join("%s" for _ in claims)
        rows = self._rows(f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY id", tuple(claims))
        return [
            JobRow(**row)
            for row in rows
            if row["state"] == "completed" and row["claim"] == claims[row["id"]]
        ]


@functools.lru_cache(maxsize=4)
def _insert_sql(columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return (
        f"INSERT INTO jobs ({names}) VALUES ({', '.join('%s' for _ in columns)}) "
        f"ON CONFLICT (source_key) WHERE {_ACTIVE_KEY} DO NOTHING RETURNING id"
    )
