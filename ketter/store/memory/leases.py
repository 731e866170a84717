"""In-memory job store: leases (see :class:`ketter.store.ports.leases.LeasesPort`)."""

from __future__ import annotations

from ketter.store.memory.core import MemoryCore


class LeasesMemory(MemoryCore):
    """The leases operations in memory."""
