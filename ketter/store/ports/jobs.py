"""The job store's jobs operations."""

from __future__ import annotations

from typing import Protocol


class JobsPort(Protocol):
    """The jobs operations of the job store."""
