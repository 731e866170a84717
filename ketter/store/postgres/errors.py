"""Which PostgreSQL errors mean "the job store is unavailable now" (issue #18).

The SQLite store's outage is a state disk that is full, read-only or gone
(:func:`ketter.store.guard.is_unwritable_error`); the PostgreSQL store's is
a server that cannot answer or refused a transaction for reasons of its own,
never for this job's: the connection lost or refused (SQLSTATE class 08, or
psycopg's ``OperationalError`` without a code: "server closed the
connection", "the connection is closed"), the server shutting down or
starting (57P01–57P03), out of resources (class 53: disk full, too many
connections), a read-only server (25006, a standby after a failover), and
the transactions it aborted to keep its guarantees (40001 serialization
failure, 40P01 deadlock). Each is handled as SQLite's outage is: the
operation is not done, the job's claim and row stay as committed (a
transaction either committed or left nothing), every route pauses and the
store is probed with a backoff until it answers (:mod:`.guard`). No job is
lost: the job row is the truth and the sweep rings again for it.

Nothing of ketter is imported here: :mod:`ketter.store.guard` asks this
module, and the rest of :mod:`ketter.store.postgres` imports the guard.
"""

from __future__ import annotations


class FlushFailed(Exception):
    """A durable transaction's ``COMMIT`` held and the WAL flush sent after it
    failed: its changes are committed and may be lost with a crash of the
    server. The store is unavailable as for any failed flush (the routes
    pause); the error the flush met is its cause."""


#: SQLSTATE codes (exact) that mean the store is unavailable now.
UNAVAILABLE_CODES = frozenset({"57P01", "57P02", "57P03", "25006", "40001", "40P01"})
#: SQLSTATE classes (first two characters) that do.
UNAVAILABLE_CLASSES = frozenset({"08", "53"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (one exception, not its chain) is psycopg's word for
    an unavailable job store (see the module docstring)."""
    import psycopg

    if isinstance(exc, FlushFailed):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    code = getattr(exc, "sqlstate", None)
    if code is None:
        # No answer from the server at all: a connection that broke, was
        # closed under us or could not be made.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return code in UNAVAILABLE_CODES or code[:2] in UNAVAILABLE_CLASSES
