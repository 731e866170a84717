"""In-memory job store: events (see :class:`ketter.store.ports.events.EventsPort`)."""

from __future__ import annotations

from ketter.store.memory.core import MemoryCore


class EventsMemory(MemoryCore):
    """The events operations in memory."""
