"""Checking the audit chain: in the log files, against the job store, or in the
job store alone (``ketter audit verify``).

What is caught (tests/integration/audit/test_verify.py): an edited field (its
record no longer hashes to ``ketter.hash``, or a projected field no longer
matches its record), a deleted line (a gap in ``event.sequence``), swapped
lines (out of order), a truncated last line (not a whole JSON record), the
newest records deleted from the log (the job store holds newer ones) or from
the job store (the log holds records it lacks; jobs whose state is newer
than their last event), and a rotated file removed without the ``rotate``
record that anchors the oldest file left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ketter.audit.chain import (
    EVENT_COLUMNS,
    GENESIS,
    canonical_json,
    hashed_fields,
    record_hash,
)
from ketter.audit.ecs import ENRICHED_KEYS, JobIdentity, to_line
from ketter.store.models import Job

#: Problems listed before the report stops collecting (the first one matters).
MAX_PROBLEMS = 20


@dataclass
class Report:
    """The outcome of a verification: ``ok`` when ``problems`` is empty."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


@dataclass(frozen=True)
class Line:
    where: str  # "file:line" for messages
    fields: dict[str, Any] | None  # None: not a whole JSON record
    error: str = ""


def read_lines(files: Iterable[str]) -> Iterator[Line]:
    for path in files:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                where = f"{path}:{number}"
                if not raw.endswith(b"\n"):
                    yield Line(where, None, "the last line is truncated (no newline)")
                    continue
                try:
                    value = json.loads(raw)
                except ValueError:
                    yield Line(where, None, "not a whole JSON record (truncated or edited)")
                    continue
                if not isinstance(value, dict):
                    yield Line(where, None, "not a JSON object")
                    continue
                yield Line(where, value)


class _Db:
    """Read access to the job store for the checks (hashes, identities, head)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._hashes: dict[int, str] = {}
        self._base = -1
        self._identities: dict[int, JobIdentity | None] = {}

    def hash_of(self, seq: int, span: int = 5000) -> str | None:
        base = seq - seq % span
        if base != self._base:
            rows = self.db.execute_sql(
                "SELECT id, hash FROM events WHERE id >= ? AND id < ?", (base, base + span)
            ).fetchall()
            self._hashes = dict(rows)
            self._base = base
        return self._hashes.get(seq)

    def identity(self, job_id: int) -> JobIdentity | None:
        if job_id not in self._identities:
            if len(self._identities) > 50_000:
                self._identities.clear()
            row = Job.get_or_none(Job.id == job_id)
            self._identities[job_id] = JobIdentity.from_row(row) if row else None
        return self._identities[job_id]

    def head(self) -> tuple[int, str, float] | None:
        row = self.db.execute_sql(
            "SELECT id, hash, ts FROM events ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None


def verify_files(
    files: list[str],
    *,
    key: bytes | None = None,
    db: Any = None,
    lag: float = 300.0,
    now: float | None = None,
) -> Report:
    """Check the chain across ``files`` (oldest first) and, when ``db`` is given,
    against the job store: every record, its head, the jobs' states."""
    report = Report()
    store = _Db(db) if db is not None else None
    if store is None:
        report.notes.append(
            "job store not available: not checked against its head; "
            "file.path/file.owner not checked against the jobs"
        )
    prev_seq: int | None = None
    prev_hash = GENESIS
    first: tuple[int, str, str] | None = None
    anchors: dict[tuple[int, str], int] = {}
    for line in read_lines(files):
        if line.fields is None:
            report.problem(f"{line.where}: {line.error}")
            continue
        checked = _check_line(line, report, key, store)
        if checked is None:
            continue
        seq, prev, digest, record = checked
        report.checked += 1
        if prev_seq is None:
            first = (seq, prev, line.where)
        elif seq == prev_seq + 1:
            if prev != prev_hash:
                report.problem(
                    f"{line.where}: record seq {seq} does not link to seq "
                    f"{prev_seq} (its prev hash is not that record's hash)"
                )
        elif seq > prev_seq + 1:
            report.problem(
                f"{line.where}: records {_span(prev_seq + 1, seq - 1)} are missing "
                f"before record seq {seq} (deleted lines)"
            )
        else:
            report.problem(
                f"{line.where}: record seq {seq} is out of order (after seq "
                f"{prev_seq}: lines moved or swapped)"
            )
        if record["event"] == "rotate":
            d = record["details"]
            if isinstance(d.get("last_seq"), int) and isinstance(d.get("last_hash"), str):
                anchors[(d["last_seq"], d["last_hash"])] = seq
        if prev_seq is None or seq > prev_seq:
            prev_seq, prev_hash = seq, digest
    if first is None:
        if store is not None and store.head() is not None:
            report.problem("the log holds no record but the job store has events")
        return report
    seq, prev, where = first
    if seq == 1:
        if prev != GENESIS:
            report.problem(f"{where}: record seq 1 does not start from the genesis hash")
    elif (seq - 1, prev) in anchors:
        report.notes.append(
            f"the oldest record is seq {seq}; records before it were pruned "
            f"by rotation (anchored by rotate record seq "
            f"{anchors[(seq - 1, prev)]})"
        )
    else:
        report.problem(
            f"{where}: records {_span(1, seq - 1)} are missing: the oldest file "
            f"starts at seq {seq} and no rotate record anchors it (a rotated file "
            "removed by hand?)"
        )
    if store is not None and prev_seq is not None:
        _check_head(report, store, prev_seq, lag, time.time() if now is None else now)
        check_job_states(report, store.db)
    return report


def _check_line(
    line: Line, report: Report, key: bytes | None, store: _Db | None
) -> tuple[int, str, str, dict[str, Any]] | None:
    f = line.fields
    assert f is not None
    text, prev, digest = f.get("ketter.record"), f.get("ketter.prev"), f.get("ketter.hash")
    if not (isinstance(text, str) and isinstance(prev, str) and isinstance(digest, str)):
        report.problem(f"{line.where}: not an audit record (ketter.record/prev/hash missing)")
        return None
    try:
        record = json.loads(text)
        seq = record["seq"]
    except (ValueError, KeyError, TypeError):
        report.problem(f"{line.where}: ketter.record is not a chained record (edited)")
        return None
    if canonical_json(record) != text or not isinstance(seq, int):
        report.problem(f"{line.where}: ketter.record is not in canonical form (edited)")
        return None
    if record_hash(prev, record, key) != digest:
        report.problem(
            f"{line.where}: record seq {seq} was altered: its content does not "
            "hash to its ketter.hash" + ("" if key else " (or the chain is keyed: --key-file)")
        )
        return seq, prev, digest, record
    job = None
    if store is not None and record.get("job_id") is not None:
        job = store.identity(record["job_id"])
    expected = to_line(text, prev, digest, job)
    for name in sorted(set(expected) | set(f)):
        if store is None and name in ENRICHED_KEYS and name not in expected:
            continue
        if f.get(name) != expected.get(name):
            report.problem(
                f"{line.where}: record seq {seq}: field {name!r} does not match "
                "the chained record (edited)"
            )
            break
    if store is not None:
        stored = store.hash_of(seq)
        if stored is None:
            report.problem(
                f"{line.where}: record seq {seq} is in the log but not in the job "
                "store (deleted from the database)"
            )
        elif stored != digest:
            report.problem(f"{line.where}: record seq {seq} differs from the job store's")
    return seq, prev, digest, record


def _check_head(report: Report, store: _Db, last_seq: int, lag: float, now: float) -> None:
    head = store.head()
    if head is None or head[0] < last_seq:
        top = head[0] if head else 0
        report.problem(
            f"the job store ends at seq {top} but the log goes on to seq "
            f"{last_seq}: records {_span(top + 1, last_seq)} were deleted from "
            "the job store"
        )
        return
    if head[0] == last_seq:
        return
    oldest = store.db.execute_sql(
        "SELECT ts FROM events WHERE id > ? ORDER BY id LIMIT 1", (last_seq,)
    ).fetchone()
    missing = _span(last_seq + 1, head[0])
    if oldest is not None and now - oldest[0] > lag:
        report.problem(
            f"records {missing} are in the job store but not in the log: the newest "
            f"lines were deleted, or the shipper has not run for {now - oldest[0]:.0f}"
            " s (is `ketter workers` running?)"
        )
    else:
        report.notes.append(
            f"records {missing} are not shipped yet (recorded within the last {lag:g} s)"
        )


def check_job_states(report: Report, db: Any) -> None:
    """Every job's state must be the one its last event left it in; a job that
    is further along than its events had its newest events deleted."""
    rows = db.execute_sql(
        "SELECT j.id, j.state, e.id, e.to_state FROM jobs j "
        "LEFT JOIN (SELECT job_id, MAX(id) AS mid FROM events "
        "           WHERE job_id IS NOT NULL AND to_state IS NOT NULL GROUP BY job_id) m "
        "  ON m.job_id = j.id "
        "LEFT JOIN events e ON e.id = m.mid "
        "WHERE e.to_state IS NULL OR e.to_state != j.state ORDER BY j.id LIMIT 20"
    ).fetchall()
    for job_id, state, seq, to_state in rows:
        if seq is None:
            report.problem(
                f"job {job_id} ({state}) has no event in the chain: its events were deleted"
            )
        else:
            report.problem(
                f"job {job_id} is {state!r} but its last event (seq {seq}) leaves "
                f"it {to_state!r}: newer events were deleted"
            )


def verify_db(db: Any, *, key: bytes | None = None, chunk: int = 5000) -> Report:
    """Check the chain in the job store alone (``ketter audit verify --db``)."""
    report = Report()
    prev_seq, prev_hash = 0, GENESIS
    while True:
        rows = list(
            db.execute_sql(
                "SELECT id, job_id, ts, event, route, from_state, to_state, attempt, node, pid, "
                "user, details, prev_hash, hash FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (prev_seq, chunk),
            ).fetchall()
        )
        if not rows:
            break
        for values in rows:
            row = dict(
                zip(
                    EVENT_COLUMNS,
                    values,
                    strict=True,
                )
            )
            seq = row["id"]
            where = f"events seq {seq}"
            if seq != prev_seq + 1:
                report.problem(
                    f"{where}: records {_span(prev_seq + 1, seq - 1)} are missing "
                    "from the job store"
                )
            elif row["prev_hash"] != prev_hash:
                report.problem(f"{where}: does not link to seq {prev_seq}")
            try:
                fields = hashed_fields(row)
            except ValueError:
                report.problem(f"{where}: details are not JSON (edited)")
            else:
                if record_hash(row["prev_hash"], fields, key) != row["hash"]:
                    report.problem(f"{where}: altered: its content does not hash to its hash")
            report.checked += 1
            prev_seq, prev_hash = seq, row["hash"]
    check_job_states(report, db)
    return report


def _span(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}..{b}"
