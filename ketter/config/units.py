"""Parsing of the human units used in the config: durations and sizes.

Durations accept ``30`` (seconds), ``0.5s``, ``5s``, ``15m``, ``1h``, ``2d``;
sizes accept ``4096``, ``100MB`` (SI), ``1GiB`` (binary) and, where a key
allows it, a percentage of the filesystem (``5%``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtTpP]i?[bB]?|[bB])?\s*$")
_SIZE_UNITS = {
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "ki": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "mi": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "gi": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
    "ti": 2**40,
    "p": 10**15,
    "pb": 10**15,
    "pib": 2**50,
    "pi": 2**50,
}


def parse_duration(value: object) -> float:
    """Return seconds for ``30``, ``0.5s``, ``15m``, ``1h``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, 5s, 15m or 1h, got a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 30, 5s, 15m or 1h, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Return bytes for ``4096``, ``100MB``, ``1GiB``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 100MB or 1GiB, got a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float):
        size = int(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"expected a size such as 4096, 100MB or 1GiB, got {value!r}")
        unit = (match.group(2) or "b").lower()
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return size


@dataclass(frozen=True)
class FreeSpace:
    """A free-space threshold: an absolute byte count or a percentage."""

    bytes: int = 0
    percent: float = 0.0

    def required(self, total_bytes: int) -> int:
        """Bytes that must stay free on a filesystem of ``total_bytes``."""
        return max(self.bytes, int(total_bytes * self.percent / 100.0))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent else str(self.bytes)


def parse_free_space(value: object) -> FreeSpace:
    """Parse ``5%`` or a size (``10GiB``) into a :class:`FreeSpace`."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"expected a percentage such as 5%, got {value!r}") from None
        if not 0 <= percent < 100:
            raise ValueError(f"a percentage must be between 0% and 100%, got {value!r}")
        return FreeSpace(percent=percent)
    return FreeSpace(bytes=parse_size(value))
