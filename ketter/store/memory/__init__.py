"""The in-memory job store (a fake for unit tests): one class composed of one
mixin per area, over the tables and transactions of
:mod:`ketter.store.memory.core`. It runs the same contract suite as the
SQLite store (``tests/contract``)."""

from __future__ import annotations

from ketter.store.memory.events import EventsMemory
from ketter.store.memory.heartbeats import HeartbeatsMemory
from ketter.store.memory.intake import IntakeMemory
from ketter.store.memory.jobs import JobsMemory
from ketter.store.memory.leases import LeasesMemory
from ketter.store.memory.manifests import ManifestsMemory
from ketter.store.memory.metrics import MetricsMemory
from ketter.store.memory.routes import RoutesMemory
from ketter.store.memory.tokens import TokensMemory


class MemoryJobStore(
    JobsMemory,
    LeasesMemory,
    IntakeMemory,
    RoutesMemory,
    HeartbeatsMemory,
    EventsMemory,
    ManifestsMemory,
    TokensMemory,
    MetricsMemory,
):
    """The job store in memory (see :class:`ketter.store.port.JobStore`)."""
