"""In-memory job store: jobs (see :class:`ketter.store.ports.jobs.JobsPort`)."""

from __future__ import annotations

from ketter.store.memory.core import MemoryCore


class JobsMemory(MemoryCore):
    """The jobs operations in memory."""
