"""The composition root: what one process is built from, once, from the config.

``Node.from_config(config, role)`` reads the audit key (for a role that may
append events), opens the job store, builds the audit chain (node name, key,
actor) with its event bus (:mod:`ketter.events`; the alert subscriber for
the service roles), the notifier (on first use) and the clock, and every entry point
takes it: each CLI command that writes, the watcher, the workers, ``ketter
run``, later the API.

Which roles may append events is explicit (:data:`ROLES`). On a keyed node
(``audit.hmac_key_file``) an event appended without the key is a record
``audit verify`` calls altered: a role that appends and cannot read the key
is refused here, with exit 2 and before anything is written (not even the
store file), and a role that does not append gets a chain that raises
:class:`ketter.audit.chain.MayNotAppend` instead of writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ketter.audit.chain import AuditChain, Principal, os_user
from ketter.config import Config
from ketter.errors import ConfigError

if TYPE_CHECKING:
    from ketter.jobs.runner import Notifier
    from ketter.queue import Queue
    from ketter.store.backend import StoreBackend
    from ketter.store.port import JobStore
    from ketter.store.sql_read import SqlReadStore


@dataclass(frozen=True)
class Role:
    """What a process is, and whether it may append audit events."""

    name: str
    appends_events: bool
    #: How the refusal names the command (``ketter enqueue``).
    command: str


#: Every role a process can take. ``appends_events``: it writes events, so
#: on a keyed node it must hold the key (or is refused at start).
ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role("workers", True, "ketter workers"),
        Role("watcher", True, "ketter watcher"),
        Role("run", True, "ketter run"),
        Role("transfer", True, "ketter transfer"),
        Role("enqueue", True, "ketter enqueue"),
        Role("requeue", True, "ketter requeue"),
        Role("cancel", True, "ketter cancel"),
        Role("pause", True, "ketter pause"),
        Role("resume", True, "ketter resume"),
        Role("ship", True, "ketter audit ship"),
        # Creates and revokes API tokens, each with its event.
        Role("token", True, "ketter token"),
        # The HTTP API: records every call it serves (and every refusal).
        Role("api", True, "ketter api"),
        # Writes the schema, never an event: needs no key.
        Role("db-upgrade", False, "ketter db upgrade"),
        # Only reads (status, jobs, health, metrics, db status, audit verify,
        # token list): never an event, no key.
        Role("read", False, "ketter status"),
    )
}


#: Roles whose committed events alert people (:class:`ketter.events.AlertSubscriber`).
ALERTING = frozenset({"workers", "run", "watcher"})


def read_audit_key(config: Config) -> bytes | None:
    """The node's audit HMAC key (None when the chain is not keyed); a
    :class:`ConfigError` (exit 2, no restart loop) with the config line when
    it is missing or unreadable (see :mod:`ketter.config.credentials`)."""
    from ketter.config.credentials import read_hmac_key

    return read_hmac_key(
        config.audit.hmac_key_file,
        config_path=config.path,
        line=config.line_of("audit.hmac_key_file"),
    )


def chain_for(config: Config, role: Role, *, actor: Principal | None = None) -> AuditChain:
    """The audit chain ``role`` writes with: the key read first, so a role
    that appends and cannot read it is refused before anything is written."""
    key = None
    if role.appends_events:
        try:
            key = read_audit_key(config)
        except ConfigError as exc:
            transfer = role.name == "transfer"
            raise ConfigError(
                f"{exc}\n{role.command} records audit events, which this node signs "
                "with that key; nothing was "
                + ("transferred or written" if transfer else "written")
                + ". Run it as an account that can read the key file: root where "
                "the units pass the key to the services with LoadCredential= and "
                f"the file is root-only (sudo {role.command} ...)"
                + (
                    ", or hand the file to the running workers with `ketter enqueue`"
                    if transfer
                    else ""
                )
            ) from None
    return AuditChain(
        node=config.node or _hostname(),
        key=key,
        actor=actor or os_user(),
        may_append=role.appends_events,
    )


def store_backend(config: Config) -> StoreBackend:
    """The backend of ``config.store``: the one place it is chosen
    (:mod:`ketter.store.backend`; the queue follows it in
    :func:`ketter.queue.build_queue`)."""
    if config.store.backend == "postgresql":
        from ketter.store.postgres.backend import PgBackend

        assert config.store.dsn is not None  # the loader requires it
        return PgBackend(config.store.dsn, config.store.password_file, config.db_path)
    from ketter.store.sqlite.backend import SqliteBackend

    return SqliteBackend(config.db_path, config.queue_path)


def _hostname() -> str:
    import socket

    return socket.gethostname()


@dataclass
class Node:
    """One process's store, audit chain, notifier and clock."""

    config: Config
    role: Role
    chain: AuditChain
    #: The job store this process writes (None for a node built without one).
    store: JobStore | None = None
    clock: Callable[[], float] = time.time
    _notifier: Notifier | None = field(default=None, repr=False)
    _queue: Queue | None = field(default=None, repr=False)

    @classmethod
    def from_config(
        cls,
        config: Config,
        role: str,
        *,
        open_store: bool = True,
        evidence: Iterable[str] = (),
        notifier: Notifier | None = None,
        actor: Principal | None = None,
    ) -> Node:
        """Build the node for ``role`` (a key of :data:`ROLES`). The chain
        first (a refusal writes nothing), then the store (``evidence``: see
        :func:`ketter.store.open_store`), built with the chain: every event
        this process appends goes through ``node.store.append_event``."""
        chain = chain_for(config, ROLES[role], actor=actor)
        store = None
        if open_store:
            store = store_backend(config).open_store(chain, evidence=evidence)
            from ketter.runtime.identity import ensure_name_free

            try:
                ensure_name_free(store, config, role)  # one live node per name (PostgreSQL)
            except BaseException:
                store.close()
                raise
        node = cls(config=config, role=ROLES[role], chain=chain, store=store, _notifier=notifier)
        if role in ALERTING and store is not None:
            from ketter.events import AlertSubscriber

            # The notifier is built at the first alert; a JobRunner given
            # another notifier takes this (keyed) subscription over.
            AlertSubscriber(
                lambda: node.notifier, store=store, stall_timeout=config.lease.stall_timeout
            ).subscribe(chain.bus)
        return node

    @property
    def backend(self) -> StoreBackend:
        """Where the job store is and how to reach it (:mod:`ketter.store.backend`)."""
        return store_backend(self.config)

    def open_read(self, *, for_health: bool = False, shared: bool = False) -> SqlReadStore:
        """A read model of the job store, on whichever backend it is; the
        caller closes it. ``shared``: used by one thread after another (the
        API's read connections, :mod:`ketter.api.session`)."""
        return self.backend.open_read(for_health=for_health, shared=shared)

    def open_readonly_store(self) -> JobStore:
        """The job store for reading only, with this node's chain (which
        must not append: a reader's role)."""
        return self.backend.open_readonly_store(self.chain)

    @property
    def notifier(self) -> Notifier:
        """The alert notifier, built on first use (a CLI command that alerts
        nobody starts no sender thread)."""
        if self._notifier is None:
            from ketter.alerts import build_notifier

            self._notifier = build_notifier(self.config)
        return self._notifier

    @property
    def queue(self) -> Queue:
        """The queue this process rings (detection, the CLI), built on first
        use. The workers process builds its own with the handler that
        consumes it (:mod:`ketter.workers.consumer`)."""
        if self._queue is None:
            from ketter.queue import build_queue

            self._queue = build_queue(self.config)
        return self._queue

    def close(self) -> None:
        """Stop the notifier this node built, close its queue and its store."""
        stop = getattr(self._notifier, "stop", None)
        if stop is not None:
            stop()
        if self._queue is not None:
            self._queue.close()
        if self.store is not None:
            self.store.close()
