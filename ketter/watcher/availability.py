"""Whether a route's root can be watched: lost and restored, with backoff
and one alert per outage (R-W7).

A root that is missing, unreadable or not on its ``source_mount`` is *lost*:
checked again with exponential backoff (``poll_interval`` doubling up to
``max_backoff``), recorded once in the audit chain (``watch_lost``), alerted
once it has been lost for ``alert_after`` seconds, and recorded again when it
comes back (``watch_restored``). This class keeps only that state; what a
loss does to the watch itself (stop the observer, forget the candidates) is
:class:`ketter.watcher.route_watch.RouteWatch`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ketter.config.schema import RouteConfig
from ketter.runtime.logs import job_fields

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.watcher.route_watch")


def audit(store: JobStore, event: str, route: str | None, details: dict[str, Any]) -> None:
    """Record a watcher audit event in its own transaction."""
    with store.transaction():
        store.append_event(event, now=time.time(), route=route, details=details)


class RootAvailability:
    """The lost/restored state of one route's root (see module docstring).

    ``now`` arguments are the watch's clock (monotonic); the loss's start and
    the alert's age are wall-clock time.
    """

    def __init__(
        self,
        route: RouteConfig,
        *,
        store: JobStore,
        max_backoff: float,
        alert_after: float,
        notifier: Any = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.route = route
        self.store = store
        self.max_backoff = max(max_backoff, route.poll_interval)
        self.alert_after = alert_after
        self.notifier = notifier
        self.wall = wall
        self.watching = False
        self.lost_reason: str | None = None
        self.lost_since: float | None = None  # wall clock
        self.alerted = False
        self.attempts = 0
        self.retry_at = 0.0

    def may_retry(self, now: float) -> bool:
        """Whether a lost root is due for another check (alerts meanwhile)."""
        if now < self.retry_at:
            self.maybe_alert()
            return False
        return True

    def lose(self, reason: str, now: float) -> None:
        """The root is lost (again): back off, record the first loss (and a
        new reason) in the log, the first in the chain, alert when due."""
        first = self.lost_reason is None
        self.watching = False
        delay = min(self.max_backoff, self.route.poll_interval * 2 ** min(self.attempts, 16))
        self.attempts += 1
        self.retry_at = now + delay
        if first or reason != self.lost_reason:
            self.lost_since = self.lost_since or self.wall()
            self.lost_reason = reason
            log.error(
                "watch lost: %s",
                reason,
                extra={"ketter.route": self.route.name, "ketter.retry_in": delay},
            )
            if first:
                audit(self.store, "watch_lost", self.route.name, {"reason": reason})
        self.maybe_alert()

    def restore(self, mode: str | None) -> None:
        """Watching (again); records the restoration after a loss."""
        if self.lost_reason is not None:
            down = self.wall() - (self.lost_since or self.wall())
            audit(
                self.store,
                "watch_restored",
                self.route.name,
                {"after_seconds": round(down, 3), "mode": mode},
            )
            log.warning("watch restored after %.1f s", down, **job_fields(route=self.route.name))
        self.watching = True
        self.lost_reason = self.lost_since = None
        self.alerted = False
        self.attempts = 0

    def maybe_alert(self) -> None:
        """One alert per outage, once it has lasted ``alert_after`` seconds."""
        if self.alerted or self.lost_since is None:
            return
        age = self.wall() - self.lost_since
        if age >= self.alert_after:
            self.alerted = True
            log.error(
                "watch lost for %.0f s: %s",
                age,
                self.lost_reason,
                extra={"ketter.route": self.route.name, "ketter.alert": "watch_lost"},
            )
            if self.notifier is not None:
                self.notifier.notify(
                    "watch_lost",
                    self.route.name,
                    f"route {self.route.name}: watch lost for {age:.0f} s: {self.lost_reason}",
                )
