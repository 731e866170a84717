"""What one SQL transaction remembers while it holds the store's write turn
(SQLite's ``BEGIN IMMEDIATE`` lock, PostgreSQL's chain lock), so that each
change costs fewer statements (each one a round trip on PostgreSQL):

* the audit chain's **head** once read or written: no other writer can
  append while the turn is held, so the next append needs no read;
* the **counters** its changes add (``counters`` rows), summed per route
  and written once, just before the commit, instead of one upsert per name
  per change;
* whether nested blocks are savepoints: not when the caller runs a shared
  commit **flat** (all or nothing, tried first; see
  :meth:`ketter.store.composite.manifests.CompositeManifests.commit_together`),
  and then the statements a backend may send together at the end
  (:attr:`Turn.deferred`: PostgreSQL's compare-and-sets, in one round trip).

A savepoint that rolls back takes the turn back to what it was when the
savepoint began (:meth:`Turn.mark`, :meth:`Turn.back_to`); the outermost
transaction's end forgets everything (:meth:`Turn.reset`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

from ketter.store.composite.counting import Tally

#: A held-back statement's parameters, or what computes them when it is sent
#: (an event re-sealed once the write turn is taken).
Params = tuple[object, ...] | Callable[[], tuple[object, ...]]

#: The head is not known yet in this transaction: read it.
UNKNOWN = object()

#: A statement that only reads (what a lazy shared commit may send early).
READ = re.compile(r"\s*SELECT\b(?!.*\bFOR\s+(UPDATE|SHARE|NO\s+KEY|KEY)\b)", re.I | re.S)


class WriteBeforeTurn(RuntimeError):
    """A statement that writes, sent while writes wait for the write turn
    (a lazy shared commit's work before its transaction)."""


_Mark = tuple[object, dict[str, Tally]]


class Turn:
    """One thread's transaction on one store (see module docstring)."""

    __slots__ = (
        "counts",
        "deferred",
        "depth",
        "durable",
        "flat",
        "head",
        "lazy",
        "published",
        "stack",
        "unsealed",
    )

    def __init__(self) -> None:
        #: Nesting of :meth:`ketter.store.sql.core.SqlCore.transaction`.
        self.depth = 0
        self.flat = False
        #: ``(seq, hash)`` of the chain's last event, ``None`` (empty chain)
        #: or :data:`UNKNOWN`.
        self.head: object = UNKNOWN
        #: route → what this transaction's changes add to its counters.
        self.counts: dict[str, Tally] = {}
        #: Statements of a flat block held back, each with the rows it must
        #: change (the backend's ``_settle``).
        self.deferred: list[tuple[str, Params, int]] = []
        #: A shared commit tried whole before the write turn is taken
        #: (PostgreSQL's :meth:`~ketter.store.postgres.jobs.JobsPg._whole`):
        #: its events sealed on a provisional head (``(0, "")``), re-sealed
        #: once the turn is taken (``unsealed``, in order), their
        #: publications held (``published``); ``stack`` holds the
        #: transaction opened then.
        self.lazy = False
        self.unsealed: list[dict[str, Any]] = []
        self.published: list[tuple[Any, Any]] = []
        self.stack: contextlib.ExitStack | None = None
        #: The lazy shared commit's transaction is a durable one.
        self.durable = False

    def count(self, route: str, tally: Tally) -> None:
        """Add ``tally`` to what this transaction will write for ``route``
        (totals summed, marks kept at their highest)."""
        mine = self.counts.setdefault(route, Tally())
        for name, amount in tally.adds.items():
            mine.add(name, amount)
        for name, value in tally.highs.items():
            if name not in mine.highs or value > mine.highs[name]:
                mine.highs[name] = value

    def mark(self) -> _Mark:
        """What a savepoint restores if it rolls back."""
        return self.head, {r: Tally(dict(t.adds), dict(t.highs)) for r, t in self.counts.items()}

    def back_to(self, mark: _Mark) -> None:
        self.head, self.counts = mark

    def reset(self) -> None:
        self.flat = self.lazy = self.durable = False
        self.unsealed, self.published, self.stack = [], [], None
        self.head = UNKNOWN
        self.counts = {}
        self.deferred = []
