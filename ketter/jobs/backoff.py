"""Exponential backoff with a cap and jitter — a pure function."""

from __future__ import annotations

import random


def compute_backoff(
    attempt: int,
    *,
    base_delay: float,
    max_delay: float,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt``
    (1-based) failed: ``base_delay × 2^(attempt-1)``, capped at ``max_delay``.

    With ``jitter`` the delay is drawn uniformly from [delay/2, delay] ("equal
    jitter"), so jobs that failed together (a share dropped) do not all come
    back in the same second, yet never wait less than half the nominal delay.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    # min() on the exponent first: 2**attempt for a huge attempt would overflow.
    exponent = min(attempt - 1, 62)
    delay = min(max_delay, base_delay * (2**exponent))
    if jitter:
        delay = (rng or random).uniform(delay / 2, delay)
    return delay
