"""The job store: SQLite via peewee, schema by numbered migrations."""

from ketter.store.driver import hide_psycopg

hide_psycopg()  # before the first import of peewee (ketter.store.driver)

from ketter.store.db import connect, durable, open_readonly, open_store, upgrade  # noqa: E402
from ketter.store.models import Event, Heartbeat, Job, JobFile, RouteStatus  # noqa: E402

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
