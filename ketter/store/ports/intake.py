"""The job store's intake operations."""

from __future__ import annotations

from typing import Protocol


class IntakePort(Protocol):
    """The intake operations of the job store."""
