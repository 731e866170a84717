"""Which alerts go out now, which are held back, and the route-failure count.

Pure and clock-driven (``now`` is passed in): at most one message per
``(kind, route)`` per ``min_interval``; the ones held back are counted and
summarised in the next message of that key, or on their own by :meth:`due`
once the interval has passed. More than ``route_failures.count`` failures
(``job_failed``, ``verify_mismatch``) on one route within
``route_failures.window`` raise a ``route_failures`` alert.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

#: The alert kinds and their titles.
KINDS: dict[str, str] = {
    "job_failed": "job failed",
    "verify_mismatch": "verification mismatch",
    "stalled": "job stalled",
    "route_paused": "route paused",
    "watch_lost": "watch lost",
    "route_failures": "repeated failures on a route",
    "store_unwritable": "state store not writable, node paused",
    "store_lost": "job store deleted or replaced, node paused",
    "store_writable": "state store writable again",
    "path_skipped": "source path skipped (longer than PATH_MAX)",
}
#: Kinds that count towards ``route_failures``.
FAILURE_KINDS = frozenset({"job_failed", "verify_mismatch"})
#: Held-back messages quoted in a summary (the count covers the rest).
SAMPLES = 5


@dataclass(frozen=True)
class Alert:
    """One message to send."""

    kind: str
    route: str | None
    body: str
    failure: bool = False
    summary: bool = False


@dataclass
class _Key:
    last_sent: float | None = None
    held: int = 0
    held_since: float = 0.0
    samples: list[str] = field(default_factory=list)


def _clock_text(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


class Throttle:
    """Not thread-safe: the notifier calls it under its lock."""

    def __init__(self, min_interval: float, failures_count: int, failures_window: float) -> None:
        self.min_interval = min_interval
        self.failures_count = failures_count
        self.failures_window = failures_window
        self._keys: dict[tuple[str, str | None], _Key] = {}
        self._failures: dict[str, deque[float]] = {}

    def offer(self, kind: str, route: str | None, message: str, now: float) -> list[Alert]:
        """The alerts to send now for this event (possibly none: held back)."""
        out: list[Alert] = []
        key = self._keys.setdefault((kind, route), _Key())
        if key.last_sent is None or now - key.last_sent >= self.min_interval:
            out.append(
                Alert(
                    kind,
                    route,
                    message + self._summary(key, kind),
                    failure=kind in FAILURE_KINDS or kind == "route_failures",
                )
            )
            key.last_sent = now
        else:
            if key.held == 0:
                key.held_since = now
            key.held += 1
            if len(key.samples) < SAMPLES:
                key.samples.append(message)
        if kind in FAILURE_KINDS and route is not None:
            recent = self._failures.setdefault(route, deque())
            recent.append(now)
            while recent and recent[0] < now - self.failures_window:
                recent.popleft()
            if len(recent) > self.failures_count:
                n = len(recent)
                recent.clear()
                out += self.offer(
                    "route_failures",
                    route,
                    f"{n} failures on route {route} within "
                    f"{self.failures_window:g} s (more than "
                    f"{self.failures_count}); look at the share and the "
                    "failed jobs (ketter jobs --state failed)",
                    now,
                )
        return out

    def due(self, now: float) -> list[Alert]:
        """Summaries of held-back alerts whose interval has passed."""
        out = []
        for (kind, route), key in self._keys.items():
            if key.held and key.last_sent is not None and now - key.last_sent >= self.min_interval:
                body = self._summary(key, kind).lstrip()
                out.append(Alert(kind, route, body, failure=kind in FAILURE_KINDS, summary=True))
                key.last_sent = now
        return out

    def _summary(self, key: _Key, kind: str) -> str:
        if not key.held:
            return ""
        lines = [
            f"\n\n{key.held} more '{kind}' alert(s) were held back since "
            f"{_clock_text(key.held_since)} (at most one per {self.min_interval:g} s):"
        ]
        lines += [f"- {sample}" for sample in key.samples]
        if key.held > len(key.samples):
            lines.append(f"- … and {key.held - len(key.samples)} more")
        key.held, key.samples = 0, []
        return "\n".join(lines)
