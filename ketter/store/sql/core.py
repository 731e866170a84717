"""What the shared SQL stands on: the backend's database, its dialect, the
statement helpers every area mixin calls, and the audit chain's primitives
(the append itself is :class:`ketter.store.composite.core.CompositeCore`'s)."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ketter.audit.chain import GENESIS, hashed_fields, record_hash
from ketter.events import Event, EventBus
from ketter.store.composite.core import CompositeCore
from ketter.store.composite.counting import Tally
from ketter.store.dialect import Dialect
from ketter.store.rows import EVENT_COLUMNS
from ketter.store.sql.turn import UNKNOWN, Turn, WriteBeforeTurn

_EVENT_MARKS = "({})".format(", ".join("?" for _ in EVENT_COLUMNS))
_INSERT_EVENTS = "INSERT INTO events ({}) VALUES".format(
    ", ".join(f'"{name}"' for name in EVENT_COLUMNS)
)
INSERT_EVENT = f"{_INSERT_EVENTS} {_EVENT_MARKS}"
#: Rows per multi-row insert of :meth:`SqlCore._insert_events`.
EVENTS_PER_INSERT = 200

# MAX(id) is one step down the primary key; ORDER BY id DESC LIMIT 1 plans
# as a scan of the events on SQLite (fast only because SQLite stops early).
_CHAIN_HEAD = "SELECT id, hash FROM events WHERE id = (SELECT MAX(id) FROM events)"


class ReadOnlyStore(RuntimeError):
    """A write through a job store opened for reading only (``ketter audit
    verify``'s, an inspect command's, a read-only PostgreSQL role's)."""


class SqlCore(CompositeCore):
    """Statements in SQLite's spelling run on the backend's database."""

    db: Any
    #: How this backend spells the shared SQL.
    dialect: Dialect

    @property
    @abc.abstractmethod
    def path(self) -> str:
        """Where the store is, for messages."""

    # -- transactions -------------------------------------------------------

    @abc.abstractmethod
    def _transaction(self, *, durable: bool) -> contextlib.AbstractContextManager[None]:
        """The backend's transaction (nested: a savepoint)."""

    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        """The backend's transaction (:meth:`_transaction`), with what it
        remembers while it holds the write turn (:mod:`.turn`): the chain's
        head, the counters written once before the commit, flat nesting."""
        return self._turn_transaction(durable)

    @contextlib.contextmanager
    def _turn_transaction(self, durable: bool) -> Iterator[None]:
        turn = self._turn()
        if turn.depth and turn.flat:
            if durable:
                raise RuntimeError("durable() must open its own transaction, not nest in one")
            yield  # no savepoint: all or nothing with the outer block
            return
        mark = turn.mark() if turn.depth else None
        # A savepoint rolled back takes its events back too (never published).
        published = self.db.deferred_count() if turn.depth else 0
        turn.depth += 1
        try:
            with self._transaction(durable=durable):
                try:
                    yield
                    if turn.depth == 1 and turn.deferred:
                        # Never a commit without them: the callers were told
                        # their changes held.
                        raise RuntimeError("statements held back and never sent (no _settle)")
                    if turn.depth == 1 and turn.counts:
                        self._count_many(turn.counts)
                except BaseException:
                    if mark is not None:
                        turn.back_to(mark)
                        self.db.drop_deferred(published)
                    raise
        finally:
            turn.depth -= 1
            if not turn.depth:
                turn.reset()

    def _turn(self) -> Turn:
        # Kept with the database (its connections are per thread): two store
        # objects on one database share a transaction, and its turn.
        local = self.db.__dict__.get("ketter_turns")
        if local is None:
            local = self.db.__dict__.setdefault("ketter_turns", threading.local())
        turn: Turn | None = getattr(local, "turn", None)
        if turn is None:
            turn = local.turn = Turn()
        return turn

    flattens = True

    @contextlib.contextmanager
    def _whole(self, *, durable: bool = False) -> Iterator[object]:
        """A shared commit tried whole, its work run **before** the write
        turn is taken: the items' Python (their steps, their events' JSON)
        no longer holds every other writer out (of every process on SQLite,
        of every node on PostgreSQL). Their statements are held back (flat),
        their events sealed on a provisional head; :meth:`_settle` takes the
        turn, re-seals them on the real head and sends them. A statement an
        item runs that writes at once is refused (``refuse_writes``,
        :class:`~ketter.store.sql.turn.WriteBeforeTurn`): the try fails and
        the items run again, each in its savepoint. Reads run outside the
        transaction, as if before it: every write is a compare-and-set
        checked when it is sent."""
        turn = self._turn()
        if turn.depth or self.db.in_transaction():
            raise RuntimeError("a shared commit tried whole opens its own transaction")
        try:
            with contextlib.ExitStack() as stack:
                turn.depth, turn.flat, turn.lazy, turn.stack = 1, True, True, stack
                turn.durable = durable
                self.db.refuse_writes(True)
                yield None
                if turn.lazy:
                    self._take_turn()  # nothing was settled: an empty commit
                if turn.deferred:
                    raise RuntimeError("statements held back and never sent (no _settle)")
                if turn.counts:
                    self._count_many(turn.counts)
        finally:
            self.db.refuse_writes(False)
            turn.depth = 0
            turn.reset()

    def _ensure_writable(self) -> None:
        if getattr(self.db, "read_only", False):
            raise ReadOnlyStore(f"the job store at {self.path} is open for reading only")

    def _sealed_later(self) -> bool:
        return self._turn().lazy

    def _take_turn(self) -> None:
        """The lazy shared commit's transaction, now: ``BEGIN`` with the
        write turn and the head, the held events re-sealed after it (each
        one's sequence and hash; their JSON is kept) and their publication
        set for the commit."""
        turn = self._turn()
        assert turn.stack is not None and turn.lazy
        if self.db.refuse_writes(False):
            # An item wrote at once and caught the refusal: its write is not
            # in this commit, so the commit must not happen as it is.
            raise WriteBeforeTurn("a write of this shared commit was refused before its turn")
        turn.lazy = False
        turn.head = UNKNOWN
        turn.stack.enter_context(self._transaction(durable=turn.durable))
        head = self._chain_head()
        base, prev = head if head is not None else (0, GENESIS)
        for row in turn.unsealed:
            row["id"] = base + int(row["id"])
            row["prev_hash"] = prev
            row["hash"] = prev = record_hash(prev, hashed_fields(row), self.chain.key)
        if turn.unsealed:
            turn.head = (int(turn.unsealed[-1]["id"]), prev)
        for bus, event in turn.published:
            self.db.defer_event(bus, dataclasses.replace(event, seq=event.seq + base))
        turn.unsealed, turn.published = [], []

    @contextlib.contextmanager
    def _flat(self) -> Iterator[object]:
        turn = self._turn()
        if not turn.depth:
            raise RuntimeError("_flat() needs an open transaction")
        was, turn.flat = turn.flat, True
        try:
            yield None
        finally:
            turn.flat = was

    def _settle(self) -> bool:
        """Take the write turn of a lazy shared commit (:meth:`_whole`) and
        send what its items held back, one statement after the other:
        ``False`` when one changed fewer rows than it should (PostgreSQL
        sends them in one pipeline: :mod:`ketter.store.postgres.jobs`)."""
        turn = self._turn()
        if turn.lazy:
            self._take_turn()
        work, turn.deferred = turn.deferred, []
        for sql, params, rows in work:
            cursor = self.db.execute_sql(sql, params() if callable(params) else params)
            if int(cursor.rowcount) != rows:
                return False
        return True

    def _count_later(self, route: str, counted: Tally) -> None:
        turn = self._turn()
        if turn.depth:
            turn.count(route, counted)  # written by the outermost block's end
        else:
            self._count(route, counted.adds, counted.highs)

    @abc.abstractmethod
    def _count_many(self, counts: dict[str, Tally]) -> None:
        """What a transaction's changes add to the counters, route by route,
        in two statements at most (:mod:`ketter.store.sql.metrics`)."""

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run ``sql`` (SQLite's spelling) with ``params``; the cursor."""
        return self.db.execute_sql(self.dialect.sql(sql), tuple(params))

    def in_transaction(self) -> bool:
        # A shared commit prepared before its write turn (PostgreSQL's
        # _whole) is a transaction to the code it runs: its writes are held
        # back or refused, never sent on their own.
        return bool(self.db.in_transaction()) or self._turn().lazy

    def release_thread(self) -> None:
        """Close this thread's connection (a thread that ends)."""
        self.db.close()

    def close(self) -> None:
        self.db.close()

    # -- the audit chain's primitives (append_event: CompositeCore) ----------
    # Raw SQL: an append runs in every state change, peewee's builder costs
    # more than the insert itself. The backend's transaction serialises the
    # appends (SQLite's write lock, PostgreSQL's write turn).

    def _chain_head(self) -> tuple[int, str] | None:
        # Read once per transaction: the write turn keeps every other
        # writer from appending until it ends (the turn's head after that).
        turn = self._turn()
        if turn.lazy:
            # Before the write turn: a provisional head, re-sealed at _settle.
            return (0, "") if turn.head is UNKNOWN else turn.head  # type: ignore[return-value]
        if turn.depth and turn.head is UNKNOWN:
            turn.head = self._begun_head()
        if turn.depth and turn.head is not UNKNOWN:
            return turn.head  # type: ignore[return-value]
        last = self._exec(_CHAIN_HEAD).fetchone()
        head = (last[0], last[1]) if last else None
        if turn.depth:
            turn.head = head
        return head

    def _begun_head(self) -> object:
        """The head as the transaction's start read it, if the backend reads
        it then (PostgreSQL, with its write turn); else :data:`UNKNOWN`."""
        return UNKNOWN

    def _new_head(self, seq: int, hash_: str) -> None:
        turn = self._turn()
        if turn.depth:
            turn.head = (seq, hash_)

    def _insert_event(self, row: dict[str, Any]) -> None:
        turn = self._turn()
        if not turn.lazy:
            self._exec(INSERT_EVENT, tuple(row[name] for name in EVENT_COLUMNS))
            return
        # Before the write turn: sealed again and sent by _settle.
        turn.unsealed.append(row)
        turn.deferred.append(
            (self.dialect.sql(INSERT_EVENT), lambda: tuple(row[n] for n in EVENT_COLUMNS), 1)
        )

    def _insert_events(self, rows: Sequence[dict[str, Any]]) -> None:
        # One statement per EVENTS_PER_INSERT rows (one round trip each on
        # PostgreSQL), within both engines' parameter limits.
        for i in range(0, len(rows), EVENTS_PER_INSERT):
            chunk = rows[i : i + EVENTS_PER_INSERT]
            if len(chunk) == 1:
                self._insert_event(chunk[0])
                continue
            marks = ", ".join([_EVENT_MARKS] * len(chunk))
            self._exec(
                f"{_INSERT_EVENTS} {marks}",
                tuple(row[name] for row in chunk for name in EVENT_COLUMNS),
            )

    def _publish_after_commit(self, bus: EventBus, event: Event) -> None:
        turn = self._turn()
        if turn.lazy:
            turn.published.append((bus, event))  # its seq is provisional yet
        else:
            self.db.defer_event(bus, event)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._exec(sql, params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
