"""The audit shipper: copies the event chain from the job store to the JSON-lines
audit log, in sequence order, from one thread of the workers process.

The job store is the source of truth (each event commits with the state
change it describes); the log is its append-only, SIEM-readable copy. The
shipper resumes after the last whole line of the log, so a SIGKILL loses no
record (it is re-read from the database) and a crash mid-line is repaired.
An exclusive lock on ``<log_file>.lock`` keeps a second shipper (a second
workers process) from interleaving lines. See docs/audit.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ketter.audit.chain import EVENT_COLUMNS, GENESIS, hashed_fields, record_event
from ketter.audit.chain import canonical_json as _canonical
from ketter.audit.ecs import JobIdentity, iso_ms, to_line
from ketter.audit.logfile import AuditFiles, first_timestamp, format_line, fsync_dir, last_line
from ketter.config import Config
from ketter.store.models import Job, database

log = logging.getLogger("ketter.audit")

_SELECT_EVENTS = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id LIMIT ?"


def log_path(config: Config) -> str:
    """The audit log's path (``audit.log_file`` is relative to ``state_dir``)."""
    path = config.audit.log_file
    return path if os.path.isabs(path) else os.path.join(config.state_dir, path)


class AuditShipper:
    """Ships events to the audit log; :meth:`ship_once` for tests, :meth:`start`
    / :meth:`stop` for the workers process."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 0.5,
        batch: int = 1000,
    ) -> None:
        self.audit = config.audit
        self.files = AuditFiles(log_path(config))
        self.clock = clock
        self.interval = interval
        self.batch = batch
        self._fd: int | None = None
        self._size = 0
        self._day: str | None = None
        self._last_seq = 0
        self._last_hash = GENESIS
        self._identities: dict[int, JobIdentity | None] = {}
        self._lock_cm: contextlib.AbstractContextManager[bool] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_locked = False

    # -- one pass ------------------------------------------------------------

    def ship_once(self) -> int:
        """Write every event not shipped yet (up to ``batch``); returns how many."""
        if self._fd is None and not self._open():
            return 0
        # Raw SQL: peewee's row building was a quarter of the shipper's time.
        cursor = database.obj.execute_sql(_SELECT_EVENTS, (self._last_seq, self.batch))
        rows = [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in cursor.fetchall()]
        if not rows:
            return 0
        self._load_identities(rows)
        pending: list[bytes] = []
        pending_size = 0
        for row in rows:
            if row["id"] != self._last_seq + 1 or row["prev_hash"] != self._last_hash:
                log.error(
                    "audit chain break in the job store before seq %d (expected seq %d "
                    "after hash %s); shipped as found, `ketter audit verify` names it",
                    row["id"],
                    self._last_seq + 1,
                    self._last_hash[:12],
                )
            record = hashed_fields(row)
            text = _canonical(record)
            job = self._identities.get(row["job_id"]) if row["job_id"] is not None else None
            line = to_line(text, row["prev_hash"], row["hash"], job, record)
            data = (format_line(line) + "\n").encode("utf-8")
            day = iso_ms(row["ts"])[:10]
            if self._rotation_due(pending_size, len(data), day):
                self._write(pending)
                pending, pending_size = [], 0
                self._rotate()
            pending.append(data)
            pending_size += len(data)
            if self._day is None:
                self._day = day
            self._last_seq, self._last_hash = row["id"], row["hash"]
        self._write(pending)
        return len(rows)

    def drain(self) -> int:
        """Ship until nothing is left; returns how many."""
        total = 0
        while True:
            n = self.ship_once()
            total += n
            if n < self.batch:
                return total

    # -- the thread ----------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ketter-audit-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ship what is left, then stop the thread and release the log."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            while True:
                stopping = self._stop.is_set()
                try:
                    self.drain()
                except Exception:
                    # Nothing is lost (the events stay in the job store); the
                    # next pass starts again from the log's last whole line.
                    log.exception("audit shipping failed; retrying")
                    self.close()
                if stopping:
                    return
                self._stop.wait(self.interval)
        finally:
            self.close()
            database.obj.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_cm is not None:
            self._lock_cm.__exit__(None, None, None)
            self._lock_cm = None

    # -- files ---------------------------------------------------------------

    def _open(self) -> bool:
        cm = self.files.writer_lock()
        if not cm.__enter__():
            cm.__exit__(None, None, None)
            if not self._warned_locked:
                log.warning("another process ships %s; this one does not", self.files.path)
                self._warned_locked = True
            return False
        self._lock_cm = cm
        path = self.files.path
        last = last_line(path)
        size = os.path.getsize(path) if os.path.exists(path) else 0
        end = last.end if last else 0
        if size > end:  # a partial line left by a crash: its record is shipped again
            log.warning("cutting a partial last line (%d bytes) off %s", size - end, path)
            os.truncate(path, end)
        if last is None:
            rotated = self.files.rotated()
            last = last_line(rotated[-1]) if rotated else None
        self._last_seq, self._last_hash = (last.seq, last.digest) if last else (0, GENESIS)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        stamp = first_timestamp(path)
        self._day = stamp[:10] if stamp else None
        if size == 0:
            fsync_dir(self.files.directory)
        return True

    def _write(self, chunks: list[bytes]) -> None:
        if not chunks or self._fd is None:
            return
        for data in chunks:  # one write per line: never a line split by another writer
            os.write(self._fd, data)
            self._size += len(data)
        os.fsync(self._fd)

    def _rotation_due(self, pending: int, incoming: int, day: str) -> bool:
        current = self._size + pending
        if current == 0:  # never rotate an empty file (a line bigger than the limit)
            return False
        if self.audit.rotate_max_bytes and current + incoming > self.audit.rotate_max_bytes:
            return True
        return bool(self.audit.rotate_when) and self._day is not None and day != self._day

    def _rotate(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        target = self.files.rotated_name(self.clock(), self._last_seq)
        os.rename(self.files.path, target)
        self._fd = os.open(
            self.files.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
        )
        fsync_dir(self.files.directory)
        self._size = 0
        self._day = None
        log.info("audit log rotated", extra={"file.path": target})
        self._prune()

    def _prune(self) -> None:
        rotated = self.files.rotated()
        keep = max(self.audit.rotate_backups, 0)
        for path in rotated[: max(len(rotated) - keep, 0)]:
            last = last_line(path)
            with open(path, "rb") as fh:
                first = fh.readline()
            first_seq = json.loads(first)["event.sequence"] if first.endswith(b"\n") else None
            # The anchor first, then the deletion: a crash between the two
            # leaves the file and an anchor (harmless), never a gap without one.
            with database.obj.atomic():
                record_event(
                    "rotate",
                    now=self.clock(),
                    details={
                        "pruned_file": os.path.basename(path),
                        "first_seq": first_seq,
                        "last_seq": last.seq if last else None,
                        "last_hash": last.digest if last else None,
                        "rotate_backups": keep,
                    },
                )
            os.unlink(path)
            fsync_dir(self.files.directory)
            log.info("audit log pruned", extra={"file.path": path})

    def _load_identities(self, rows: list[dict[str, Any]]) -> None:
        if len(self._identities) > 50_000:
            self._identities.clear()
        wanted = {
            r["job_id"]
            for r in rows
            if r["job_id"] is not None and r["job_id"] not in self._identities
        }
        if not wanted:
            return
        found = {
            j.id: JobIdentity.from_row(j)
            for j in Job.select(
                Job.id, Job.source_path, Job.source_display, Job.source_owner, Job.kind, Job.mode
            ).where(Job.id.in_(list(wanted)))
        }
        for job_id in wanted:
            self._identities[job_id] = found.get(job_id)
