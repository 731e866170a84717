"""Backoff as a table: base × 2^(attempt-1), capped, jitter within [d/2, d]."""

from __future__ import annotations

import random

import pytest

from ketter.jobs.backoff import compute_backoff


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "expected"),
    [
        (1, 5.0, 900.0, 5.0),  # first retry waits the base delay
        (2, 5.0, 900.0, 10.0),  # then doubles
        (3, 5.0, 900.0, 20.0),
        (6, 5.0, 900.0, 160.0),  # 5 × 2^5
        (9, 5.0, 900.0, 900.0),  # 1280 capped at max_delay
        (500, 5.0, 900.0, 900.0),  # a huge attempt count neither overflows nor exceeds the cap
        (1, 0.0, 900.0, 0.0),  # zero base: immediate retries (tests)
    ],
)
def test_backoff_without_jitter(attempt: int, base: float, cap: float, expected: float) -> None:
    assert compute_backoff(attempt, base_delay=base, max_delay=cap, jitter=False) == expected


@pytest.mark.parametrize("attempt", [1, 2, 5, 12])
def test_jitter_stays_between_half_and_full(attempt: int) -> None:
    rng = random.Random(attempt)
    nominal = compute_backoff(attempt, base_delay=5, max_delay=900, jitter=False)
    draws = [compute_backoff(attempt, base_delay=5, max_delay=900, rng=rng) for _ in range(200)]
    assert all(nominal / 2 <= d <= nominal for d in draws)
    assert len(set(draws)) > 100  # really jittered


def test_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError):
        compute_backoff(0, base_delay=1, max_delay=2)
