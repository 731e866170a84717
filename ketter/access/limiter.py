"""Failed authentications limited per client address: after ``max_failures``
in ``window`` seconds, a client waits until the oldest of them leaves the
window (the API answers 429 with ``Retry-After``), before its token is even
looked at. Each failure is an audit event, so this also bounds how fast a
caller can grow the chain.

Memory is bounded: at most ``max_clients`` addresses are remembered, the
one whose last failure is oldest forgotten first. An attacker cycling
addresses can push a blocked address out early; the other choice, a table
that grows with every address it sees, lets it exhaust the API's memory.
An IPv6 client is counted by its /64 (one host holds a whole /64 and
picks any address in it).
"""

from __future__ import annotations

import collections
import ipaddress
import math
import threading

#: Defaults: 10 failures a minute per address, 10,000 addresses remembered
#: (about 2 MB at most).
MAX_FAILURES = 10
WINDOW = 60.0
MAX_CLIENTS = 10_000


def client_key(address: str) -> str:
    """Who is counted for ``address``: an IPv4 address itself, an IPv6
    address's /64 (an IPv4-mapped one as its IPv4), other text as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailedAuthLimiter:
    """Failed authentications per client in a sliding window; thread-safe."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if max_failures < 1 or window <= 0 or max_clients < 1:
            raise ValueError("max_failures, window and max_clients must be positive")
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._lock = threading.Lock()
        # client -> the times of its last failures (at most max_failures),
        # ordered by last failure, oldest first.
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def retry_after(self, client: str, now: float) -> int | None:
        """Whole seconds ``client`` must wait before its next try (at least
        1: the ``Retry-After`` value), or ``None`` when it may try now."""
        key = client_key(client)
        with self._lock:
            times = self._failures.get(key)
            if times is None or len(times) < self.max_failures:
                return None
            # The same test as the one that forgets a failure (in failed()).
            if times[0] <= now - self.window:
                return None
            return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, client: str, now: float) -> int | None:
        """Count a failed authentication of ``client`` at ``now``; what
        :meth:`retry_after` says after it."""
        key = client_key(client)
        with self._lock:
            times = self._failures.pop(key, None)
            if times is None:
                times = collections.deque(maxlen=self.max_failures)
            while times and times[0] <= now - self.window:
                times.popleft()
            times.append(now)
            self._failures[key] = times  # now the most recent
            self._forget(now)
        return self.retry_after(client, now)

    def __len__(self) -> int:
        """How many clients are remembered."""
        with self._lock:
            return len(self._failures)

    def _forget(self, now: float) -> None:
        # Oldest last failure first: drop those whose window is over, then
        # as many more as the bound asks.
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] > now - self.window and len(self._failures) <= self.max_clients:
                break
            del self._failures[key]
