"""Failed authentications per client: the window, the wait, the bound."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ketter.access.limiter import FailedAuthLimiter, client_key


def test_allowed_until_the_limit_then_told_how_long_to_wait() -> None:
    limiter = FailedAuthLimiter(max_failures=3, window=60.0)
    assert limiter.retry_after("10.0.0.1", 0.0) is None
    assert limiter.failed("10.0.0.1", 0.0) is None
    assert limiter.failed("10.0.0.1", 10.0) is None
    assert limiter.failed("10.0.0.1", 20.0) == 40  # the first leaves the window at 60
    assert limiter.retry_after("10.0.0.1", 20.0) == 40
    assert limiter.retry_after("10.0.0.1", 59.5) == 1  # rounded up, never 0
    assert limiter.retry_after("10.0.0.1", 60.0) is None
    # another client is not concerned
    assert limiter.retry_after("10.0.0.2", 20.0) is None


def test_the_window_slides() -> None:
    limiter = FailedAuthLimiter(max_failures=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        limiter.failed("c", t)
    assert limiter.retry_after("c", 60.0) is None  # the failure at 0 is out
    assert limiter.failed("c", 60.0) == 10  # 10, 20, 60: wait for 10 to leave at 70
    assert limiter.retry_after("c", 70.0) is None
    # failures long ago are forgotten
    assert limiter.failed("c", 1000.0) is None


def test_ipv6_counts_by_its_64_and_mapped_v4_as_v4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert client_key("10.1.2.3") == "10.1.2.3"
    assert client_key("testclient") == "testclient"
    limiter = FailedAuthLimiter(max_failures=2, window=60.0)
    limiter.failed("2001:db8:1:2::1", 0.0)
    assert limiter.failed("2001:db8:1:2:ffff:ffff:ffff:ffff", 1.0) == 59
    assert limiter.retry_after("2001:db8:1:3::1", 1.0) is None  # another /64


def test_memory_is_bounded_against_cycling_addresses() -> None:
    limiter = FailedAuthLimiter(max_failures=2, window=60.0, max_clients=100)
    for n in range(10_000):
        limiter.failed(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1.0 + n * 1e-6)
    assert len(limiter) == 100
    # the most recent are the ones kept: n = 9999's second failure blocks it ...
    assert limiter.failed("10.0.39.15", 2.0) == 60
    # ... the oldest were forgotten: n = 0's second failure is its first again
    assert limiter.failed("10.0.0.0", 2.0) is None


def test_clients_whose_window_is_over_are_forgotten() -> None:
    limiter = FailedAuthLimiter(max_failures=5, window=60.0)
    for n in range(50):
        limiter.failed(f"10.0.0.{n}", 0.0)
    assert len(limiter) == 50
    limiter.failed("10.0.1.1", 61.0)
    assert len(limiter) == 1


def test_threads_count_every_failure() -> None:
    limiter = FailedAuthLimiter(max_failures=1000, window=60.0)

    def fail() -> None:
        for _ in range(100):
            limiter.failed("c", 1.0)

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert limiter.retry_after("c", 1.0) is None  # 800 < 1000
    fail()
    fail()
    assert limiter.retry_after("c", 1.0) == 60  # 1000 reached


@pytest.mark.parametrize("bad", [(0, 60.0, 10), (3, 0.0, 10), (3, 60.0, 0)])
def test_the_bounds_must_be_positive(bad: tuple[int, float, int]) -> None:
    with pytest.raises(ValueError):
        FailedAuthLimiter(*bad)


@settings(deadline=None, max_examples=300)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 30), st.booleans()),
        max_size=60,
    ),
    max_failures=st.integers(1, 5),
)
def test_the_limiter_agrees_with_counting_every_failure(
    steps: list[tuple[str, float, bool]], max_failures: int
) -> None:
    """A model that keeps every failure: a client waits while ``max_failures``
    of them are less than a window old, until the oldest of those leaves it."""
    window = 60.0
    limiter = FailedAuthLimiter(max_failures=max_failures, window=window)
    failures: dict[str, list[float]] = {}
    now = 0.0
    for client, gap, fails in steps:
        now += gap
        if fails:
            limiter.failed(client, now)
            failures.setdefault(client, []).append(now)
        recent = sorted((t for t in failures.get(client, []) if t > now - window), reverse=True)
        expected = (
            max(1, math.ceil(recent[max_failures - 1] + window - now))
            if len(recent) >= max_failures
            else None
        )
        assert limiter.retry_after(client, now) == expected
