"""Checking the audit chain: in the log files, against the job store, or in the
job store alone (``ketter audit verify``).

What is caught (tests/integration/audit/test_verify.py): an edited field (its
record no longer hashes to ``ketter.hash``, or a projected field no longer
matches its record), a deleted line (a gap in ``event.sequence``), swapped
lines (out of order), a truncated last line (not a whole JSON record), the
newest records deleted from the log (the job store holds newer ones) or from
the job store (the log holds records it lacks; jobs whose state is newer
than their last event), a rotated file removed without the ``rotate``
record that anchors the oldest file left, or cut short (its name carries its
last sequence); an empty chain on a node that has run (jobs, heartbeats, a
high-water mark say so); and a tail cut consistently from the log and the
job store, when the chain ends before a high-water mark
(:mod:`ketter.audit.highwater`) or differs from it at the mark.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketter.audit.chain import GENESIS, canonical_json, hashed_fields, record_hash
from ketter.audit.ecs import ENRICHED_KEYS, JobIdentity, layout_of, to_line
from ketter.audit.highwater import COMPONENT, Mark, beat_marks, highwater_path, read_file

if TYPE_CHECKING:
    from ketter.store.port import JobStore

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
        # The database chain and a node's log are checked in one report on a
        # shared store: a problem both checks find is named once.
        if len(self.problems) < MAX_PROBLEMS and text not in self.problems:
            self.problems.append(text)


@dataclass(frozen=True)
class Line:
    where: str  # "file:line" for messages
    fields: dict[str, Any] | None  # None: not a whole JSON record
    error: str = ""
    path: str = ""


#: A rotated file's name: ``<stem>.<UTC stamp>.<last seq><ext>``.
_ROTATED_NAME = re.compile(r"\.\d{8}T\d{6}Z\.(\d+)(\.[^./]*)?$")


def node_marks(store: JobStore | None, state_dir: str, report: Report) -> list[Mark]:
    """The high-water marks of this node: its ``audit.highwater`` file and the
    job store's ``audit`` heartbeat rows (when ``store`` is given). A damaged
    file is a problem."""
    marks: list[Mark] = []
    try:
        mark = read_file(highwater_path(state_dir))
    except ValueError as exc:
        report.problem(str(exc))
    else:
        if mark is not None:
            marks.append(mark)
    if store is not None:
        marks.extend(beat_marks(store))
    return marks


def read_lines(files: Iterable[str]) -> Iterator[Line]:
    for path in files:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                where = f"{path}:{number}"
                if not raw.endswith(b"\n"):
                    yield Line(where, None, "the last line is truncated (no newline)", path)
                    continue
                try:
                    value = json.loads(raw)
                except ValueError:
                    yield Line(where, None, "not a whole JSON record (truncated or edited)", path)
                    continue
                if not isinstance(value, dict):
                    yield Line(where, None, "not a JSON object", path)
                    continue
                yield Line(where, value, path=path)


class _Db:
    """Read access to the job store for the checks (hashes, identities, head),
    with the hashes read a span at a time and the jobs remembered."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._hashes: dict[int, str] = {}
        self._base = -1
        self._identities: dict[int, JobIdentity | None] = {}

    def hash_of(self, seq: int, span: int = 5000) -> str | None:
        base = seq - seq % span
        if base != self._base:
            self._hashes = self.store.event_hashes(base, base + span)
            self._base = base
        return self._hashes.get(seq)

    def identity(self, job_id: int) -> JobIdentity | None:
        if job_id not in self._identities:
            if len(self._identities) > 50_000:
                self._identities.clear()
            row = self.store.event_jobs([job_id]).get(job_id)
            self._identities[job_id] = JobIdentity.from_row(row) if row else None
        return self._identities[job_id]

    def head(self) -> tuple[int, str, float] | None:
        row = self.store.last_event()
        return (row.id, row.hash, row.ts) if row else None

    def others_only(self, first: int, end: int, node: str) -> int | None:
        """The first sequence in ``first..end-1`` written by ``node`` (an
        event its log lacks), or None when every one there is another
        node's. A sequence missing from the database is left to the
        database check (:func:`verify_db`)."""
        after = first - 1
        while after < end - 1:
            rows = self.store.events_after(after, limit=min(5000, end - 1 - after))
            if not rows:
                return None
            for row in rows:
                if row.id >= end:
                    return None
                if row.node == node:
                    return int(row.id)
            after = rows[-1].id
        return None

    def first_own_after(self, seq: int, node: str) -> tuple[int, float] | None:
        """This node's first event after ``seq`` (sequence, time), if any."""
        after = seq
        while True:
            rows = self.store.events_after(after, limit=5000)
            if not rows:
                return None
            for row in rows:
                if row.node == node:
                    return int(row.id), float(row.ts)
            after = rows[-1].id


def verify_files(
    files: list[str],
    *,
    key: bytes | None = None,
    store: JobStore | None = None,
    lag: float = 300.0,
    now: float | None = None,
    marks: list[Mark] | None = None,
    report: Report | None = None,
    node: str | None = None,
) -> Report:
    """Check the chain across ``files`` (oldest first) and, when ``store`` is given,
    against the job store: every record, its head, the jobs' states; and that
    it reaches every high-water mark in ``marks`` (:func:`node_marks`).

    ``node`` (a shared store, several nodes): the files are that node's log,
    which holds only its own events. A gap between two of its lines is then
    right when every event in it is another node's, and each line must link
    to the database's record before it; the database chain itself is
    checked by :func:`verify_db`."""
    report = Report() if report is None else report
    marks = marks or []
    now = time.time() if now is None else now
    reader = _Db(store) if store is not None else None
    if reader is None:
        report.notes.append(
            "job store not available: not checked against its head; "
            "file.path/file.owner not checked against the jobs"
        )
    prev_seq: int | None = None
    prev_hash = GENESIS
    first: tuple[int, str, str] | None = None
    anchors: dict[tuple[int, str], int] = {}
    last_in_file: dict[str, int] = {}
    wanted = {m.seq for m in marks}
    log_hashes: dict[int, str] = {}
    gaps = 0
    for line in read_lines(files):
        if line.fields is None:
            report.problem(f"{line.where}: {line.error}")
            continue
        checked = _check_line(line, report, key, reader)
        if checked is None:
            continue
        seq, prev, digest, record = checked
        report.checked += 1
        last_in_file[line.path] = seq
        if seq in wanted:
            log_hashes[seq] = digest
        if prev_seq is None:
            first = (seq, prev, line.where)
        elif node is not None and reader is not None and seq > prev_seq + 1:
            own = reader.others_only(prev_seq + 1, seq, node)
            if own is not None:
                report.problem(
                    f"{line.where}: record seq {own} of node {node} is in the job "
                    f"store but missing from this node's log before record seq {seq} "
                    "(deleted lines)"
                )
            elif prev != reader.hash_of(seq - 1):
                report.problem(
                    f"{line.where}: record seq {seq} does not link to the job store's "
                    f"record seq {seq - 1}"
                )
        elif node is not None and reader is None and seq > prev_seq + 1:
            # A node's log on a shared store without the job store: its gaps
            # may be other nodes' records; nothing here tells.
            gaps += 1
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
    _check_rotated_names(report, files, last_in_file)
    head = reader.head() if reader is not None else None
    end = max(prev_seq or 0, head[0] if head else 0)

    def hash_at(seq: int) -> str | None:
        return reader.hash_of(seq) if reader is not None else log_hashes.get(seq)

    if first is None:
        if head is not None:
            assert reader is not None
            # Nothing shipped yet (a one-shot transfer whose log could not be
            # written) is a note while young, a deleted log once older.
            _check_head(report, reader, 0, lag, now, node)
        else:
            check_empty_chain(store, report, marks)
        if store is not None:
            check_job_states(store, report)
        check_marks(report, marks, end, hash_at)
        return report
    seq, prev, where = first
    if node is not None and reader is None and (seq > 1 or gaps):
        report.notes.append(
            f"node {node}'s log on a shared store, checked without the job store: "
            f"{gaps + (seq > 1)} gap(s) between its records not checked (other "
            "nodes' records, or deleted lines: verify with the job store)"
        )
    if node is not None and reader is None and seq > 1:
        pass
    elif node is not None and reader is not None and seq > 1:
        # This node's log: the records before its first line must be other
        # nodes', or this node's pruned by rotation (up to an anchor).
        pruned = max((last for last, _ in anchors if last < seq), default=0)
        own = reader.others_only(pruned + 1, seq, node)
        if own is not None:
            report.problem(
                f"{where}: record seq {own} of node {node} is in the job store but "
                f"missing from this node's log (its oldest line is seq {seq} and no "
                "rotate record anchors it)"
            )
        elif prev != reader.hash_of(seq - 1):
            report.problem(
                f"{where}: record seq {seq} does not link to the job store's record seq {seq - 1}"
            )
        elif pruned:
            report.notes.append(
                f"node {node}'s records up to seq {pruned} were pruned by rotation "
                "(anchored by a rotate record)"
            )
    elif seq == 1:
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
    if reader is not None and prev_seq is not None:
        _check_head(report, reader, prev_seq, lag, now, node)
        check_job_states(reader.store, report)
    if node is not None and reader is None and any(m.seq > end for m in marks):
        # The shipper's mark passes other nodes' records after this node's
        # last line: only the job store can tell them from a cut tail.
        report.notes.append(
            f"node {node}'s high-water mark is past its log's last record (seq {end}): "
            "the records after it are other nodes' or cut; verify with the job store"
        )
        marks = [m for m in marks if m.seq <= end]
    check_marks(report, marks, end, hash_at)
    return report


def _check_rotated_names(report: Report, files: list[str], last_in_file: dict[str, int]) -> None:
    """A rotated file's name says which sequence it ends at: lines cut from
    its end (a tail cut reaching back into rotated files) are caught."""
    for path in files:
        m = _ROTATED_NAME.search(os.path.basename(path))
        if m is None:
            continue
        named, last = int(m.group(1)), last_in_file.get(path)
        if last is None:
            report.problem(f"{path}: holds no record, but its name says it ends at seq {named}")
        elif last != named:
            report.problem(
                f"{path}: its name says it ends at seq {named} but its last record is "
                f"seq {last}: lines were cut from a rotated file"
            )


def check_empty_chain(store: JobStore | None, report: Report, marks: list[Mark]) -> None:
    """An empty chain is only right on a node that has never run."""
    ran: list[str] = []
    if store is not None:
        jobs = store.job_count()
        if jobs:
            ran.append(f"{jobs} job(s) in the job store")
        services = store.service_components(besides=COMPONENT)
        if services:
            ran.append(f"heartbeats of {', '.join(services)}")
    ran.extend(f"{m.where} says seq {m.seq} was reached" for m in marks if m.seq > 0)
    if ran:
        report.problem(
            "the audit chain is empty (no record in the log or the job store) but this "
            f"node has run ({'; '.join(ran)}): the events and the log were emptied"
        )
    else:
        report.notes.append("the audit chain is empty: nothing has run on this node yet")


def check_marks(report: Report, marks: list[Mark], end: int, hash_at: Any) -> None:
    """The chain must reach every high-water mark, with the same record there:
    a tail cut from both the log and the job store ends it earlier (or, with
    new events written after the cut, puts another record at the mark)."""
    for mark in marks:
        if mark.seq > end:
            report.problem(
                f"the audit chain ends at seq {end} but {mark.where} says this node "
                f"reached seq {mark.seq}: records {_span(end + 1, mark.seq)} were cut "
                "from the log and the job store"
            )
            continue
        found = hash_at(mark.seq) if mark.digest else None
        if found is not None and found != mark.digest:
            report.problem(
                f"record seq {mark.seq} is not the one {mark.where} recorded: the chain "
                "was cut and rewritten after it"
            )


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
    # In the layout the line was written in: lines shipped before layout 2
    # (b72af96: ``destination.path`` under ``ketter.*``, categorization
    # fields) stay valid as they are, and still match their record exactly.
    expected = to_line(text, prev, digest, job, layout=layout_of(f))
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


def _check_head(
    report: Report, store: _Db, last_seq: int, lag: float, now: float, node: str | None = None
) -> None:
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
    if node is not None:
        # Only this node's newer events belong in its log.
        own = store.first_own_after(last_seq, node)
        if own is None:
            return
        seq, oldest_ts = own
        if now - oldest_ts > lag:
            report.problem(
                f"record seq {seq} of node {node} (and any after it) is in the job store "
                "but not in this node's log: the newest lines were deleted, or the "
                f"shipper has not run for {now - oldest_ts:.0f} s (is `ketter workers` "
                "running?)"
            )
        else:
            report.notes.append(
                f"records of node {node} from seq {seq} are not shipped yet (recorded "
                f"within the last {lag:g} s)"
            )
        return
    oldest = store.store.first_event_ts_after(last_seq)
    missing = _span(last_seq + 1, head[0])
    if oldest is not None and now - oldest > lag:
        report.problem(
            f"records {missing} are in the job store but not in the log: the newest "
            f"lines were deleted, or the shipper has not run for {now - oldest:.0f}"
            " s (is `ketter workers` running?)"
        )
    else:
        report.notes.append(
            f"records {missing} are not shipped yet (recorded within the last {lag:g} s)"
        )


def check_job_states(store: JobStore, report: Report) -> None:
    """Every job's state must be the one its last event left it in; a job that
    is further along than its events had its newest events deleted."""
    for job_id, state, seq, to_state in store.jobs_ahead_of_events(limit=20):
        if seq is None:
            report.problem(
                f"job {job_id} ({state}) has no event in the chain: its events were deleted"
            )
        else:
            report.problem(
                f"job {job_id} is {state!r} but its last event (seq {seq}) leaves "
                f"it {to_state!r}: newer events were deleted"
            )


def verify_db(
    store: JobStore,
    *,
    key: bytes | None = None,
    chunk: int = 5000,
    marks: list[Mark] | None = None,
    report: Report | None = None,
) -> Report:
    """Check the chain in the job store alone (``ketter audit verify --db``)."""
    report = Report() if report is None else report
    marks = marks or []
    prev_seq, prev_hash = 0, GENESIS
    while True:
        rows = store.events_after(prev_seq, limit=chunk)
        if not rows:
            break
        for event in rows:
            row = event.as_dict()
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
    if not report.checked:
        check_empty_chain(store, report, marks)
    check_job_states(store, report)
    check_marks(report, marks, prev_seq, _Db(store).hash_of)
    return report


def _span(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}..{b}"
