"""The audit shipper: copies the event chain from the job store to the JSON-lines
audit log, in sequence order, from one thread of the workers process.

The job store is the source of truth (each event commits with the state
change it describes); the log is its append-only, SIEM-readable copy. The
shipper resumes after the last whole line of the log, so a SIGKILL loses no
record (it is re-read from the database) and a crash mid-line is repaired.
An exclusive lock on ``<log_file>.lock`` keeps a second shipper (a second
workers process) from interleaving lines.

Each pass checks that the log's path still names the open file (same
``st_dev``/``st_ino``): a log deleted or replaced while the workers run is
reopened at once (an ``audit_log_reopened`` event records it) instead of
being written unlinked until a restart. Each shipment raises the high-water
mark (:mod:`ketter.audit.highwater`) and writes the ``audit`` heartbeat row,
which carries the last error while shipping fails (``ketter health`` fails
then). See docs/audit.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ketter.audit import highwater
from ketter.audit.chain import GENESIS, hashed_fields
from ketter.audit.chain import canonical_json as _canonical
from ketter.audit.ecs import JobIdentity, iso_ms, to_line
from ketter.audit.logfile import AuditFiles, first_timestamp, format_line, fsync_dir, last_line
from ketter.config import Config
from ketter.runtime.children import service_pid

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.audit")

#: The ``audit`` heartbeat is written at least this often while idle (so
#: ``ketter health`` can tell a shipper thread that died from an idle one).
BEAT_EVERY = 10.0
#: While shipping keeps failing, its error is logged this often (seconds).
FAILING_SAID_EVERY = 60.0
#: Job identities kept between passes (cleared beyond it): a few batches' worth.
IDENTITY_CACHE = 5_000


def log_path(config: Config) -> str:
    """The audit log's path (``audit.log_file`` is relative to ``state_dir``)."""
    path = config.audit.log_file
    return path if os.path.isabs(path) else os.path.join(config.state_dir, path)


def ship_now(store: JobStore, config: Config) -> str | None:
    """Ship what is pending, once (the end of a one-shot ``ketter transfer``):
    None when done, or when another process holds the log (it ships them);
    else why not (the events wait in the job store)."""
    owner = os.stat(config.state_dir).st_uid
    if os.geteuid() != owner:
        # A log, lock or mark file created by another account (root, an
        # operator) would lock the service account out of its own log.
        return (
            f"this account (uid {os.geteuid()}) does not own {config.state_dir} "
            f"(uid {owner}) and leaves the log to the service"
        )
    shipper = AuditShipper(config, store=store)
    try:
        shipper.drain()
    except Exception as exc:  # reported by the caller; the transfer itself is done
        return f"{type(exc).__name__}: {exc}"
    finally:
        shipper.close()
    return None


#: Passes shorter than a batch in a row after which a drain stops (see
#: :meth:`AuditShipper.drain`): a prune's anchor needs one more pass, a
#: rotation it fills again one more.
_SHORT_PASSES = 8


class AuditShipper:
    """Ships events from ``store`` to the audit log; :meth:`ship_once` for
    tests, :meth:`start` / :meth:`stop` for the workers process."""

    def __init__(
        self,
        config: Config,
        *,
        store: JobStore,
        clock: Callable[[], float] = time.time,
        interval: float = 0.5,
        batch: int = 1000,
    ) -> None:
        self.audit = config.audit
        self.store = store
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
        self.node = config.node
        #: On a shared store (PostgreSQL, several nodes) the chain holds every
        #: node's events; this node's log holds only its own (docs/audit.md,
        #: "Several nodes"). None: every event (SQLite, one node).
        self.own_node: str | None = config.node if config.store.backend == "postgresql" else None
        #: The last sequence written to the open file (its rotated name).
        self._written_seq = 0
        self._hwm_path = highwater.highwater_path(config.state_dir)
        self._hwm_seq = -1  # the file's mark, read at the first shipment
        self._beat_at = 0.0
        # Well inside health.heartbeat_stale, which health compares it with.
        self._beat_every = min(BEAT_EVERY, config.health.heartbeat_stale / 3)
        self._beat_seq = -1
        #: The last shipping error and since when (None while shipping works).
        self.error: str | None = None
        self.failing_since: float | None = None
        #: The workers process this shipper ships for (its own, or its
        #: parent's when it is their child, :mod:`ketter.audit.ship_process`):
        #: ``ketter health`` tells a shipper that stopped beating from it.
        self.workers_pid = os.getpid()
        #: A deletion/replacement seen but not recorded in the chain yet.
        self._reopen: dict[str, Any] | None = None
        # A process without the HMAC key of a keyed chain (a CLI user who may
        # not read it) copies lines but writes no event of its own: an
        # unkeyed record would break the chain. The workers' shipper prunes.
        self._may_record = store.chain.keyed or not config.audit.hmac_key_file

    # -- one pass ------------------------------------------------------------

    def ship_once(self) -> int:
        """Write every event not shipped yet (up to ``batch``); returns how many."""
        self._check_path()
        if self._reopen is not None:
            self._record_reopen()
        if self._fd is None and not self._open():
            return 0
        rows = [e.as_dict() for e in self.store.events_after(self._last_seq, limit=self.batch)]
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
            if self.own_node is not None and row["node"] != self.own_node:
                # Another node's event: its own shipper writes it to its log.
                self._last_seq, self._last_hash = row["id"], row["hash"]
                continue
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
            self._written_seq = row["id"]
        self._write(pending)
        self._raise_mark()
        return len(rows)

    def drain(self) -> int:
        """Ship until a pass ships nothing; returns how many. A failure is recorded
        in the ``audit`` heartbeat (``ketter health``) and raised."""
        total = short = 0
        try:
            # Until a pass ships nothing: a pass that rotates and prunes
            # appends the ``rotate`` anchor after what it read, and a drain
            # that stopped at the first short pass left it unshipped (the
            # files alone then showed a gap with no anchor). Events other
            # writers keep appending could keep it going: after a few short
            # passes in a row the rest waits for the next drain.
            while short < _SHORT_PASSES:
                n = self.ship_once()
                total += n
                if n == 0:
                    break
                short = short + 1 if n < self.batch else 0
        except Exception as exc:
            self._failed(exc)
            raise
        # Only the shipper holding the log writes the heartbeat (a second
        # one, locked out, knows nothing of what was shipped).
        if self._fd is not None and (self.error is not None or self._beat_seq != self._last_seq):
            self.error = self.failing_since = None
            self._beat()
        return total

    # -- the log's path, the mark, the heartbeat -------------------------------

    def _check_path(self) -> None:
        """Notice a log deleted or replaced under the open file: writing on
        into an unlinked inode would lose every line until a restart."""
        if self._fd is None:
            return
        opened = os.fstat(self._fd)
        try:
            now_there = os.stat(self.files.path)
        except FileNotFoundError:
            reason = "deleted"
        else:
            if (now_there.st_dev, now_there.st_ino) == (opened.st_dev, opened.st_ino):
                return
            reason = "replaced"
        log.error(
            "the audit log %s was %s while open; reopening it (the chain records it)",
            self.files.path,
            reason,
        )
        if not self._may_record:
            log.error("not recorded in the chain: this process does not hold the HMAC key")
            self.close()
            return
        self._reopen = {
            "path": self.files.path,
            "reason": reason,
            "inode": opened.st_ino,
            "shipped_seq": self._last_seq,
            "shipped_hash": self._last_hash,
        }
        self.close()

    def _record_reopen(self) -> None:
        # Kept until it is in the chain: a store that cannot be written now
        # (full disk) still gets the record on a later pass.
        assert self._reopen is not None
        with self.store.transaction():
            self.store.append_event("audit_log_reopened", now=self.clock(), details=self._reopen)
        self._reopen = None

    def _mark_holds(self, seq: int, digest: str | None) -> bool:
        """Whether the chain still has the record a mark names. A chain cut
        and written on past the mark has another record there: the mark is
        then the evidence and is never replaced (verify names it)."""
        if seq <= 0 or digest is None:
            return True
        found = self.store.event_hash(seq)
        return found is not None and found == digest

    def _raise_mark(self) -> None:
        """The high-water file follows the log (only ever raised)."""
        if self._hwm_seq < 0:
            try:
                mark = highwater.read_file(self._hwm_path)
            except ValueError as exc:
                log.error("%s; writing a new one", exc)
                mark = None
            self._hwm_seq = mark.seq if mark else 0
            if mark is not None and not self._mark_holds(mark.seq, mark.digest):
                log.error(
                    "the audit chain differs from its high-water mark %s at seq %d "
                    "(cut and rewritten?); the mark is kept as evidence, see "
                    "`ketter audit verify`",
                    self._hwm_path,
                    mark.seq,
                )
                self._hwm_seq = 1 << 62  # never replaced by this process
        if self._last_seq > self._hwm_seq:
            highwater.write_file(self._hwm_path, self._last_seq, self._last_hash, self.clock())
            self._hwm_seq = self._last_seq

    def _failed(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self.error is None:
            self.failing_since = self.clock()
        changed = text != self.error
        self.error = text
        if changed or time.monotonic() - self._beat_at >= self._beat_every:
            self._beat()

    def _beat(self) -> None:
        """The ``audit`` heartbeat row: the last shipped sequence and hash,
        and the error while shipping fails. Its own failure (a store that
        cannot be written) is logged: shipping does not depend on it."""
        now = self.clock()
        try:
            with self.store.transaction():
                details = {
                    "shipped_seq": self._last_seq,
                    "shipped_hash": self._last_hash,
                    "log": self.files.path,
                    "error": self.error,
                    "failing_since": self.failing_since,
                    "workers_pid": self.workers_pid,
                    "service": service_pid(),
                }
                # The mark is never lowered (a failure before the log was
                # read knows no sequence): keep the higher one already there.
                row = self.store.get_heartbeat(highwater.COMPONENT, self.node)
                if row is not None:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        old = json.loads(row.details)
                        seq, digest = int(old.get("shipped_seq") or 0), old.get("shipped_hash")
                        if seq > self._last_seq or not self._mark_holds(seq, digest):
                            details["shipped_seq"] = seq
                            details["shipped_hash"] = digest
                text = json.dumps(details, ensure_ascii=False)
                self.store.beat(self.node, {highwater.COMPONENT: text}, pid=os.getpid(), now=now)
        except Exception:
            log.exception("cannot write the audit heartbeat")
            return
        self._beat_at = time.monotonic()
        self._beat_seq = self._last_seq

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
        failing_since: float | None = None
        said_at = 0.0
        try:
            while True:
                stopping = self._stop.is_set()
                try:
                    self.drain()
                    due = time.monotonic() - self._beat_at >= self._beat_every
                    if self._fd is not None and due:
                        self._beat()
                    if failing_since is not None:
                        log.info("audit shipping resumed")
                        failing_since = None
                except Exception:
                    # Nothing is lost (the events stay in the job store); the
                    # next pass starts again from the log's last whole line.
                    # drain() put the error in the heartbeat: health fails.
                    # Logged when it starts and then once a minute, not at
                    # every pass of an outage.
                    now = time.monotonic()
                    if failing_since is None or now - said_at >= FAILING_SAID_EVERY:
                        log.exception("audit shipping failed; retrying")
                        failing_since = failing_since or now
                        said_at = now
                    self.close()
                if stopping:
                    return
                self._stop.wait(self.interval)
        finally:
            self.close()
            self.store.release_thread()

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
        self._written_seq = self._last_seq
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
        # The file's last line (not the last event seen: on a shared store
        # the events after it may all be other nodes').
        target = self.files.rotated_name(self.clock(), self._written_seq)
        os.rename(self.files.path, target)
        self._fd = os.open(
            self.files.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
        )
        fsync_dir(self.files.directory)
        self._size = 0
        self._day = None
        log.info("audit log rotated", extra={"file.path": target})
        if self._may_record:
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
            with self.store.transaction():
                self.store.append_event(
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
        # A pass needs the jobs of its own events (a batch of 1,000 events is
        # about 150 jobs): 50,000 kept ~20 MiB of identities and made the
        # workers' RSS climb for the first 10 minutes of a steady run (#19).
        if len(self._identities) > IDENTITY_CACHE:
            self._identities.clear()
        wanted = {
            r["job_id"]
            for r in rows
            if r["job_id"] is not None and r["job_id"] not in self._identities
        }
        if not wanted:
            return
        found = {
            job_id: JobIdentity.from_row(job)
            for job_id, job in self.store.event_jobs(wanted).items()
        }
        for job_id in wanted:
            self._identities[job_id] = found.get(job_id)
