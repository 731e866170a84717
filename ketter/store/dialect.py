"""Where the job store's SQL differs between SQLite and PostgreSQL, written
once (issue #18).

The shared SQL is written in SQLite's spelling — ``?`` placeholders,
``IS ?`` for a comparison that must match NULL, ``instr(haystack, needle)``
— and :meth:`Dialect.sql` turns it into the backend's. Everything else is
written so that both read it the same: column names that are keywords
quoted (``"user"``: unquoted, PostgreSQL reads ``user`` as
``current_user``), the flags compared as the integers they are on both
(``paused = 1``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """One backend's spelling of the shared SQL."""

    name: str
    #: The parameter placeholder (``?`` or ``%s``).
    mark: str
    #: ``x IS <param>``: true also when both are NULL.
    null_safe_eq: str
    #: The function ``instr(haystack, needle)`` is spelt with.
    instr: str
    #: Appended to a claim's candidate query: lock the rows read until the
    #: claim commits and pass over those another claimant holds (SQLite's
    #: write lock already keeps every other writer out).
    lock_rows: str = ""
    #: Appended to the search that only asks whether any job of some routes
    #: is claimable (``LIMIT 1``): walk the claim order's partial index.
    #: PostgreSQL's planner otherwise chose a scan of the whole table, the
    #: finished history first, whenever several routes had a backlog: 11 ms
    #: a doorbell with 60,000 finished jobs and 8,700 waiting on three
    #: routes, against 0.03 ms in order. SQLite reads its route index and
    #: would sort.
    any_in_order: str = ""
    #: The scalar maximum of two values.
    greatest: str = "MAX"
    #: A condition always true (``WHERE`` without a filter).
    true: str = "1"
    #: The leases' clock in a statement (the server's, in seconds since the
    #: epoch), or ``None``: bound as a parameter (SQLite: this machine's).
    clock: str | None = None

    def sql(self, text: str) -> str:
        """``text`` (SQLite's spelling) in this dialect (cached)."""
        return text if self.mark == "?" else _translate(self, text)

    def marks(self, count: int) -> str:
        """``count`` placeholders separated by commas (an ``IN (…)`` list)."""
        return ", ".join(self.mark for _ in range(count))


@functools.lru_cache(maxsize=1024)
def _translate(dialect: Dialect, text: str) -> str:
    if dialect.mark == "?":
        return text
    # psycopg reads % as the start of a placeholder: a literal one is %%.
    out = text.replace("%", "%%")
    out = out.replace(" IS ?", f" {dialect.null_safe_eq} ?").replace("instr(", f"{dialect.instr}(")
    return out.replace("?", dialect.mark)


SQLITE = Dialect(name="sqlite", mark="?", null_safe_eq="IS", instr="instr")
POSTGRESQL = Dialect(
    name="postgresql",
    mark="%s",
    null_safe_eq="IS NOT DISTINCT FROM",
    instr="strpos",
    lock_rows=" FOR UPDATE SKIP LOCKED",
    any_in_order=" ORDER BY priority DESC, id",
    greatest="GREATEST",
    true="TRUE",
    clock="EXTRACT(EPOCH FROM now())::double precision",
)
