"""One watcher per route across nodes (issue #18 item 4): a session
advisory lock per route, held by the watcher's own connection.

A watcher watches a route only while it holds the route's lock
(``pg_try_advisory_lock(ROUTE_LOCKS, key)``, the key derived from the route
name): the first watcher to ask gets it, the others ask again at every
:meth:`RouteLocks.refresh`. The lock belongs to the connection's session,
so it frees the moment the holder's process dies (the server sees the
socket close) or its connection is cut; another node's watcher then takes
the route at its next refresh and starts with a full scan (the catch-up,
:meth:`ketter.watcher.route_watch.RouteWatch.lead`). A watcher whose lock
connection is lost (a database outage) holds nothing, so watches nothing,
until it has connected again and taken the locks back.

The connection is a plain psycopg one in autocommit, apart from the job
store's (whose connections come and go with its threads and transactions):
the two-key advisory locks live in another space than the store's one-key
ones (:data:`ketter.store.postgres.db.CHAIN_LOCK`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

#: The first key of every route lock ("ketr").
ROUTE_LOCKS = 0x6B657472
#: Seconds to wait for a connection; keepalives and ``tcp_user_timeout``
#: notice a server whose host vanished.
CONNECT_TIMEOUT = 5


def route_key(name: str) -> int:
    """The second key of ``name``'s lock: 32 bits of its SHA-256, signed."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


class RouteLocks:
    """The route locks one watcher holds, on its own connection."""

    def __init__(
        self,
        dsn: str,
        password: str | None,
        routes: Iterable[str],
        *,
        node: str = "",
        ttl: float = 30.0,
    ) -> None:
        self.dsn = dsn
        #: The server drops this session (and frees its locks) within about
        #: half of ``ttl`` once the holder's machine stops answering.
        self.ttl = ttl
        self.node = node
        self.password = password
        self.routes = list(routes)
        self.held: set[str] = set()
        #: Why nothing is held when the connection is down (None when up).
        self.problem: str | None = None
        #: The error that took the connection down (None when up).
        self.error: BaseException | None = None
        self._conn: Any = None

    def refresh(self, wanted: Iterable[str] | None = None) -> set[str]:
        """Check the connection, give back the locks of routes not
        ``wanted`` any more (their root is lost here: another node that sees
        it may watch them), try to take the locks of the ``wanted`` routes
        (default: every route) not held yet; the routes held now (none
        while the connection is down)."""
        import psycopg

        want = set(self.routes if wanted is None else wanted)
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._connect()
            else:
                self._conn.execute("SELECT 1")  # a cut connection fails here
            for name in sorted(self.held - want):
                self._conn.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", (ROUTE_LOCKS, route_key(name))
                )
                self.held.discard(name)
                log.info("route lock given back: route %s is not watchable here", name)
            for name in self.routes:
                if name in self.held or name not in want:
                    continue
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (ROUTE_LOCKS, route_key(name))
                ).fetchone()
                if row is not None and row[0]:
                    self.held.add(name)
                    log.info("route lock taken: this watcher watches route %s", name)
            self.problem = self.error = None
        except psycopg.Error as exc:
            if self.held:
                log.warning(
                    "route locks lost with their connection (%s): routes %s not watched "
                    "until the locks are taken again",
                    str(exc).strip(),
                    ", ".join(sorted(self.held)),
                )
            self.problem = f"route locks' connection lost: {str(exc).strip()}"
            self.error = exc
            self._drop()
        return set(self.held)

    def _connect(self) -> None:
        import psycopg

        self._drop()
        params: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            # A statement sent to a server whose host vanished fails instead
            # of waiting for TCP's retransmissions (~15 min): keepalives are
            # not sent while data waits for its acknowledgement.
            "tcp_user_timeout": max(1000, int(self.ttl * 1000 / 3)),
            # Who holds a lock, for psql: pg_locks joined with pg_stat_activity.
            "application_name": f"ketter watcher {self.node}"[:63],
        }
        # The server's own keepalives on this session: a holder whose whole
        # machine died (no FIN, no RST) loses its locks within about half of
        # lease.ttl instead of the kernel's two hours, so that with the other
        # watchers' lock_interval (at most lease.ttl/2) the route is watched
        # again within the lease (TCP only; on a unix socket the server and
        # the holder die together).
        idle, interval = max(1, int(self.ttl / 4)), max(1, int(self.ttl / 8))
        params["options"] = (
            f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval} "
            f"-c tcp_keepalives_count=2 -c tcp_user_timeout={int(self.ttl * 1000 / 2)}"
        )
        if self.password is not None:
            params["password"] = self.password
        self._conn = psycopg.connect(self.dsn, **params)

    def _drop(self) -> None:
        self.held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                conn.close()

    def close(self) -> None:
        """Release every lock (the session ends)."""
        self._drop()
