"""In-memory job store: routes (see :class:`ketter.store.ports.routes.RoutesPort`)."""

from __future__ import annotations

from ketter.store.memory.core import MemoryCore


class RoutesMemory(MemoryCore):
    """The routes operations in memory."""
