"""In-memory job store: intake (see :class:`ketter.store.ports.intake.IntakePort`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ketter.store.memory.core import MemoryCore
from ketter.store.models import TERMINAL_STATES
from ketter.store.ports.intake import KeyedJob, check_job_columns
from ketter.store.rows import JOB_COLUMNS, JobRow


class IntakeMemory(MemoryCore):
    """The intake operations in memory."""

    def add_job(self, columns: Mapping[str, Any]) -> int | None:
        check_job_columns(columns, JOB_COLUMNS)
        with self._write():
            values = dict(columns)
            # The partial unique index jobs_active_source_key: one active job
            # per source_key (a terminal row may share it).
            if values.get("state") not in TERMINAL_STATES and self.active_job(values["source_key"]):
                return None
            if values.get("id") is None:
                values["id"] = self.tables.next_id("jobs")
            elif values["id"] in self.tables.jobs:
                raise ValueError(f"job {values['id']} exists")
            else:
                self.tables.ids["jobs"] = max(self.tables.ids.get("jobs", 0), values["id"])
            row = JobRow(**values)
            self.tables.jobs[row.id] = row
            return row.id

    def add_jobs(self, rows: Sequence[Mapping[str, Any]]) -> list[int | None]:
        return [self.add_job(row) for row in rows]

    def active_job(self, source_key: str) -> JobRow | None:
        for row in self.tables.jobs.values():
            if row.source_key == source_key and row.state not in TERMINAL_STATES:
                return dataclasses.replace(row)
        return None

    def last_job(self, source_key: str) -> JobRow | None:
        found = [r for r in self.tables.jobs.values() if r.source_key == source_key]
        return dataclasses.replace(max(found, key=lambda r: r.id)) if found else None

    def active_jobs_by_source_path(self, route: str, paths: Iterable[bytes]) -> list[JobRow]:
        wanted = {bytes(p) for p in paths}
        return [
            dataclasses.replace(row)
            for row in sorted(self.tables.jobs.values(), key=lambda r: r.id)
            if row.route == route
            and row.state not in TERMINAL_STATES
            and bytes(row.source_path) in wanted
        ]

    def jobs_by_source_keys(self, keys: Iterable[str]) -> list[KeyedJob]:
        wanted = set(keys)
        seen: dict[KeyedJob, None] = {}
        for row in self.tables.jobs.values():
            if row.source_key in wanted:
                found = KeyedJob(
                    row.source_key,
                    row.state in TERMINAL_STATES,
                    row.source_ctime_ns,
                    row.state,
                    row.sha256,
                )
                seen[found] = None  # DISTINCT
        return list(seen)

    def delivered(self, claims: Mapping[int, str]) -> list[JobRow]:
        return [
            dataclasses.replace(row)
            for job_id, row in sorted(self.tables.jobs.items())
            if job_id in claims and row.state == "completed" and row.claim == claims[job_id]
        ]
