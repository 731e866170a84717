"""The job store's heartbeats operations."""

from __future__ import annotations

from typing import Protocol


class HeartbeatsPort(Protocol):
    """The heartbeats operations of the job store."""
