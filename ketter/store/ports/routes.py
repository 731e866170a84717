"""The job store's routes operations."""

from __future__ import annotations

from typing import Protocol


class RoutesPort(Protocol):
    """The routes operations of the job store."""
