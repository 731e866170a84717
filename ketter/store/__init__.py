"""The job store: SQLite via peewee, schema by numbered migrations."""

from ketter.store.db import connect, durable, open_readonly, open_store, upgrade
from ketter.store.models import Event, Heartbeat, Job, JobFile, RouteStatus

__all__ = [
    "Event",
    "Heartbeat",
    "Job",
    "JobFile",
    "RouteStatus",
    "connect",
    "durable",
    "open_readonly",
    "open_store",
    "upgrade",
]
