"""The job store's manifests operations."""

from __future__ import annotations

from typing import Protocol


class ManifestsPort(Protocol):
    """The manifests operations of the job store."""
