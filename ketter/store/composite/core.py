"""The audit chain's append, written once: the chain's head, the sealed row
inserted, its publication deferred to the commit; over the backend's
transactions and three primitives."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ketter.audit.chain import GENESIS, AuditChain, Principal, committed, seal
from ketter.events import Event, EventBus
from ketter.store.composite.counting import Tally

#: :meth:`CompositeCore._next_event` follows the chain's head as it is.
_THE_HEAD = object()


class CompositeCore(abc.ABC):
    """What every composite operation stands on: the backend's transactions
    and the audit chain's append (:meth:`append_event`)."""

    chain: AuditChain

    @abc.abstractmethod
    def transaction(self, *, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        """All or nothing; nested, a savepoint. ``durable=True``: on the
        disk when the block is left (must not nest)."""

    @abc.abstractmethod
    def in_transaction(self) -> bool: ...

    @abc.abstractmethod
    def lease_clock_offset(self) -> float:
        """The leases' clock less the caller's (``time.time()``): 0.0 on one
        node, the database's clock less this node's on PostgreSQL."""

    def _due_on_lease_clock(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (``jobs`` columns) with ``next_attempt_at``, written on
        the caller's clock, moved onto the leases' clock, which every claim
        compares it with: the same clock on one node, the database's on
        PostgreSQL. A node whose clock ran ahead wrote a new job's, a
        released job's or a retry's due time in the database's future: its
        doorbell found the job not due, and the job waited for the sweep
        (or for as long as the clock was off). Shifted by the two clocks'
        difference (PostgreSQL: both read as the transaction's ``BEGIN`` was
        sent, no round trip inside a transaction)."""
        due = values.get("next_attempt_at")
        if due is None:
            return values
        shift = self.lease_clock_offset()
        return values if shift == 0 else {**values, "next_attempt_at": float(due) + shift}

    @abc.abstractmethod
    def _chain_head(self) -> tuple[int, str] | None:
        """The sequence and hash of the chain's last event, read inside the
        caller's transaction (``None``: the chain is empty)."""

    @abc.abstractmethod
    def _insert_event(self, row: dict[str, Any]) -> None:
        """Insert a sealed ``events`` row (every column of ``EVENT_COLUMNS``)."""

    @abc.abstractmethod
    def _publish_after_commit(self, bus: EventBus, event: Event) -> None:
        """Publish ``event`` on ``bus`` once this thread's outermost
        transaction commits; never if it rolls back."""

    def append_event(
        self,
        event: str,
        *,
        now: float,
        job_id: int | None = None,
        route: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        attempt: int | None = None,
        details: dict[str, Any] | None = None,
        actor: Principal | None = None,
    ) -> int:
        """Append one event to the chain inside the caller's transaction (the
        one that changes what it describes); returns its sequence number.
        ``actor`` (the ``user`` column) defaults to the chain's. Published to
        the chain's bus once the transaction commits."""
        if not self.in_transaction():
            raise RuntimeError("append_event() must run inside the state change's transaction")
        row = self._next_event(
            event,
            now=now,
            job_id=job_id,
            route=route,
            from_state=from_state,
            to_state=to_state,
            attempt=attempt,
            details=details,
            actor=actor,
        )
        self._insert_event(row)
        self._appended(row, details)
        return int(row["id"])

    def append_events(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """:meth:`append_event` for each of ``events`` (its keyword arguments,
        the name under ``"event"``), sealed in order and inserted together
        (:meth:`_insert_events`)."""
        if not self.in_transaction():
            raise RuntimeError("append_events() must run inside the state change's transaction")
        rows = []
        head = self._chain_head()
        for spec in events:
            args = dict(spec)
            row = self._next_event(args.pop("event"), after=head, **args)
            head = (int(row["id"]), str(row["hash"]))  # the next one's seal needs it
            rows.append((row, spec.get("details")))
        if rows:
            self._insert_events([row for row, _ in rows])
        for row, details in rows:
            self._appended(row, details)
        return [int(row["id"]) for row, _ in rows]

    @abc.abstractmethod
    def _insert_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert sealed ``events`` rows, in order (a backend may send them
        in one statement)."""

    def _next_event(
        self,
        event: str,
        *,
        now: float,
        job_id: int | None = None,
        route: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        attempt: int | None = None,
        details: dict[str, Any] | None = None,
        actor: Principal | None = None,
        after: object = _THE_HEAD,
    ) -> dict[str, Any]:
        """The sealed row of the chain's next event (not inserted yet):
        after the chain's head, or after ``after`` (``(seq, hash)`` of an
        event sealed in this transaction and not inserted yet; ``None``:
        the chain's first)."""
        head = self._chain_head() if after is _THE_HEAD else cast("tuple[int, str] | None", after)
        seq, prev_hash = (head[0] + 1, head[1]) if head is not None else (1, GENESIS)
        return seal(
            self.chain,
            event,
            seq=seq,
            prev_hash=prev_hash,
            now=now,
            job_id=job_id,
            route=route,
            from_state=from_state,
            to_state=to_state,
            attempt=attempt,
            details=details,
            actor=actor,
            provisional=self._sealed_later(),
        )

    @abc.abstractmethod
    def _sealed_later(self) -> bool:
        """The events sealed now are sealed again once the chain's head is
        known (a shared commit prepared before its write turn: the SQL
        stores' :meth:`~ketter.store.sql.core.SqlCore._whole`)."""

    def _appended(self, row: dict[str, Any], details: dict[str, Any] | None) -> None:
        """``row`` was inserted: it is the chain's head, published once the
        transaction commits."""
        self._new_head(int(row["id"]), str(row["hash"]))
        self._publish_after_commit(self.chain.bus, committed(row, details))

    @abc.abstractmethod
    def _new_head(self, seq: int, hash_: str) -> None:
        """The event ``seq`` (``hash_``) was inserted in the caller's
        transaction (a backend may keep the head until the transaction ends)."""

    # -- what a transaction may do once, at its end ---------------------------

    @abc.abstractmethod
    def _count_later(self, route: str, counted: Tally) -> None:
        """Add ``counted`` to the route's counters in the caller's
        transaction; a backend may gather them until just before the commit
        (:meth:`_count` adds them at once)."""

    @abc.abstractmethod
    def _count(self, route: str, adds: dict[str, float], highs: dict[str, float]) -> None:
        """Add ``adds`` to the route's ``counters`` rows and raise its
        ``highs`` marks to at least their values (rows created at 0), in the
        caller's transaction."""

    #: Whether :meth:`_flat` does anything (a backend whose savepoints cost).
    flattens = False

    @abc.abstractmethod
    def _ensure_writable(self) -> None:
        """Raise when the store was opened for reading only (a backend that
        can be: :class:`ketter.store.sql.core.ReadOnlyStore`)."""

    @abc.abstractmethod
    def _settle(self) -> bool:
        """At the end of a :meth:`_flat` block: send what the backend held
        back in it; ``False`` when one of them was refused (the caller rolls
        the transaction back)."""

    @abc.abstractmethod
    def _whole(self, *, durable: bool = False) -> contextlib.AbstractContextManager[object]:
        """A shared commit tried whole: a transaction of its own (``durable``:
        :meth:`transaction`'s), :meth:`_flat`.
        A backend may run the block's work before it takes the write turn,
        and take it (and send what it held back) at :meth:`_settle`."""

    @abc.abstractmethod
    def _flat(self) -> contextlib.AbstractContextManager[object]:
        """Inside an open transaction: nested transactions are no savepoints
        until the block ends (all or nothing with the outer one), where the
        backend :attr:`flattens`; a backend that does not, does nothing."""
