"""The job store's events operations."""

from __future__ import annotations

from typing import Protocol


class EventsPort(Protocol):
    """The events operations of the job store."""
