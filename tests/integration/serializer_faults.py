"""A queue whose serializer refuses one message: a burst of rings that
fails halfway (tests of ``Queue.ring_many`` on both queue storages)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def refusing_message(queue: Any, nth: int) -> Iterator[None]:
    """While in the block, the ``nth`` message serialised raises ``OSError``."""
    serialize = queue.huey.serializer.serialize
    calls = 0

    def refuse(message: object) -> bytes:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise OSError("refused")
        return serialize(message)

    queue.huey.serializer.serialize = refuse
    try:
        yield
    finally:
        queue.huey.serializer.serialize = serialize
