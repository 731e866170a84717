"""The job store's leases operations."""

from __future__ import annotations

from typing import Protocol


class LeasesPort(Protocol):
    """The leases operations of the job store."""
