"""Writing audit events as a hash chain inside the caller's transaction.

Each ``events`` row carries the previous row's hash and its own:
``hash = SHA-256(prev_hash + "\\n" + canonical_json(record))`` (HMAC-SHA-256
with the key from ``audit.hmac_key_file`` when one is configured). The
sequence number is the row id, assigned here inside the transaction that
changes the job, so SQLite's write lock orders the events of every process
(watcher, workers, CLI) into one chain. Canonical JSON: keys sorted, no
spaces, UTF-8 (``ensure_ascii=False``), floats in Python's shortest repr —
for the strings, integers and floats Ketter writes this is byte-identical to
RFC 8785.

The node name, the key and the actor travel in an :class:`AuditChain`,
built once per process by :class:`ketter.node.Node` (the composition root)
and handed to the job store, which appends every event
(``JobStore.append_event``) with :func:`seal` inside the transaction of the
change it describes. This module holds no database and no process-wide
state. The chain carries the process's :class:`ketter.events.EventBus`: an
appended event is published to its subscribers once its transaction commits
(see :mod:`ketter.events`).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ketter.audit.vocabulary import EVENTS
from ketter.events import Event, EventBus

GENESIS = "0" * 64


@dataclass(frozen=True)
class Principal:
    """Who an event is written for: its ``user`` column.

    ``kind`` ``os-user`` (the CLI and the services: the OS user of the
    process, as before) records ``name`` alone, so existing chains read the
    same; another kind (a person or a token behind the API, later) records
    ``kind:name``.
    """

    kind: str
    name: str

    def as_user(self) -> str:
        """The ``user`` column's text."""
        return self.name if self.kind == "os-user" else f"{self.kind}:{self.name}"


def os_user() -> Principal:
    """The OS user of this process."""
    return Principal("os-user", _user())


class MayNotAppend(RuntimeError):
    """This process's role may not append audit events (it does not hold the
    chain's key): writing one would put a record ``audit verify`` calls
    altered into the chain."""


@dataclass(frozen=True)
class AuditChain:
    """The chain as one process writes it: the node's name, the HMAC key
    when the chain is keyed, and the actor recorded by default."""

    node: str
    key: bytes | None = None
    actor: Principal = field(default_factory=os_user)
    #: False for a role that does not hold the key (``ketter.node.ROLES``).
    may_append: bool = True
    #: Where the committed events are published (:mod:`ketter.events`).
    bus: EventBus = field(default_factory=EventBus, compare=False, repr=False)

    @property
    def keyed(self) -> bool:
        return self.key is not None


#: ``json.dumps`` with these arguments builds a new encoder at every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The canonical JSON text that is hashed (see module docstring)."""
    return _CANONICAL.encode(value)


def record_hash(prev_hash: str, record: dict[str, Any], key: bytes | None = None) -> str:
    """The chain hash of ``record`` following ``prev_hash``."""
    payload = (prev_hash + "\n" + canonical_json(record)).encode("utf-8")
    if key:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


def hashed_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The part of an events row covered by its hash."""
    return {
        "seq": row["id"],
        "job_id": row["job_id"],
        "ts": row["ts"],
        "event": row["event"],
        "route": row["route"],
        "from_state": row["from_state"],
        "to_state": row["to_state"],
        "attempt": row["attempt"],
        "node": row["node"],
        "pid": row["pid"],
        "user": row["user"],
        "details": json.loads(row["details"]),
    }


@functools.lru_cache(maxsize=1)
def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (containers)
        return str(os.getuid())


def seal(
    chain: AuditChain,
    event: str,
    *,
    seq: int,
    prev_hash: str,
    now: float,
    job_id: int | None = None,
    route: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    attempt: int | None = None,
    details: dict[str, Any] | None = None,
    actor: Principal | None = None,
    provisional: bool = False,
) -> dict[str, Any]:
    """The ``events`` row (every column of :data:`EVENT_COLUMNS`) for
    ``event`` as sequence ``seq`` after ``prev_hash``: what the job store
    inserts inside the transaction of the change it describes
    (``JobStore.append_event``). Refuses an unknown event, and any event
    when ``chain`` may not append (:class:`MayNotAppend`). ``provisional``:
    ``seq`` and ``prev_hash`` are not the chain's yet, and the store seals
    the row again once they are (its ``hash`` is left empty meanwhile)."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; add it to ketter.audit.vocabulary")
    if not chain.may_append:
        raise MayNotAppend(
            f"audit event {event!r}: this process's role may not append events "
            "(it does not hold the audit HMAC key)"
        )
    row = {
        "id": seq,
        "job_id": job_id,
        "ts": now,
        "event": event,
        "route": route,
        "from_state": from_state,
        "to_state": to_state,
        "attempt": attempt,
        "node": chain.node,
        "pid": os.getpid(),
        "user": (actor or chain.actor).as_user(),
        "details": canonical_json(details or {}),
    }
    row["prev_hash"] = prev_hash
    row["hash"] = "" if provisional else record_hash(prev_hash, hashed_fields(row), chain.key)
    return row


def committed(row: dict[str, Any], details: dict[str, Any] | None) -> Event:
    """What subscribers get (:mod:`ketter.events`) for a sealed row once
    its transaction commits."""
    return Event(
        seq=row["id"],
        event=row["event"],
        ts=row["ts"],
        job_id=row["job_id"],
        route=row["route"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        attempt=row["attempt"],
        details=dict(details or {}),
    )


#: Columns of ``events``, in the order Ketter reads and writes them.
EVENT_COLUMNS = (
    "id",
    "job_id",
    "ts",
    "event",
    "route",
    "from_state",
    "to_state",
    "attempt",
    "node",
    "pid",
    "user",
    "details",
    "prev_hash",
    "hash",
)
