"""In-memory job store: intake (see :class:`ketter.store.ports.intake.IntakePort`)."""

from __future__ import annotations

from ketter.store.memory.core import MemoryCore


class IntakeMemory(MemoryCore):
    """The intake operations in memory."""
