"""In-memory job store: manifests (see :class:`ketter.store.ports.manifests.ManifestsPort`)."""

from __future__ import annotations

from ketter.store.memory.core import MemoryCore


class ManifestsMemory(MemoryCore):
    """The manifests operations in memory."""
