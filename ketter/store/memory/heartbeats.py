"""In-memory job store: heartbeats (see :class:`ketter.store.ports.heartbeats.HeartbeatsPort`)."""

from __future__ import annotations

from ketter.store.memory.core import MemoryCore


class HeartbeatsMemory(MemoryCore):
    """The heartbeats operations in memory."""
