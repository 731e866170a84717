"""The apprise notifier: throttled alerts sent from a background thread.

``notify()`` never blocks a transfer: it logs the alert (operational log),
asks the :class:`Throttle` what to send, and puts that on a bounded queue; a
full queue drops the message with a warning. One sender thread delivers with
apprise; a delivery failure is logged, never raised. Alert URLs hold tokens
and passwords: they never appear in Ketter's logs, and apprise's own log
records pass through a filter that masks them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ketter.alerts.throttle import KINDS, Alert, Throttle
from ketter.config import Config

log = logging.getLogger("ketter.alerts")

#: Alerts waiting for the sender; more are dropped (with a warning), not queued.
QUEUE_SIZE = 200
#: How often the sender looks for held-back alerts to summarise.
TICK = 1.0
_STOP = object()


def _apprise() -> Any:
    """apprise, imported on first use (it loads ~100 plugins)."""
    import apprise

    return apprise


def secrets_of(urls: Iterable[str]) -> list[str]:
    """The parts of alert URLs that must not be logged (longest first)."""
    found: set[str] = set()
    for url in urls:
        found.add(url)
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        found.update(p for p in (parts.username, parts.password) if p)
        found.update(seg for seg in parts.path.split("/") if len(seg) >= 6)
        found.update(v for _, v in parse_qsl(parts.query) if len(v) >= 6)
        if "@" in parts.netloc:
            found.add(parts.netloc.rsplit("@", 1)[0])
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


class RedactSecrets(logging.Filter):
    """Masks alert URL secrets in log records (installed on apprise's logger)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = redact(text, self.secrets)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class AppriseNotifier:
    """A :class:`ketter.jobs.runner.Notifier` sending through apprise."""

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        node: str,
        min_interval: float,
        failures_count: int,
        failures_window: float,
        clock: Callable[[], float] = time.time,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.node = node
        self.clock = clock
        self.throttle = Throttle(min_interval, failures_count, failures_window)
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._secrets = secrets_of(urls)
        self._apprise = self._build(urls) if urls else None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: Config, **kw: Any) -> AppriseNotifier:
        a = config.alerts
        return cls(
            a.urls,
            node=config.node or socket.gethostname(),
            min_interval=a.min_interval,
            failures_count=a.route_failures.count,
            failures_window=a.route_failures.window,
            **kw,
        )

    def _build(self, urls: tuple[str, ...]) -> object:
        apprise = _apprise()
        apprise_log = logging.getLogger("apprise")
        redactor = RedactSecrets(self._secrets)
        apprise_log.addFilter(redactor)
        # urllib3 names the request path (a Slack/Teams token) at DEBUG.
        logging.getLogger("urllib3.connectionpool").addFilter(redactor)
        apprise_log.setLevel(max(apprise_log.level, logging.WARNING))  # its INFO/DEBUG name URLs
        # Memory only: no cache files under the service user's home (ProtectHome=).
        asset = apprise.AppriseAsset(storage_mode=apprise.PersistentStoreMode.MEMORY)
        app = apprise.Apprise(asset=asset)
        # apprise loads its plugins on the first add(); its e-mail plugin imports
        # the deprecated ``imghdr`` (an error under the tests' -W error). Not ours.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
            added = [app.add(url) for url in urls]
        for i, (url, ok) in enumerate(zip(urls, added, strict=True)):
            if not ok:
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                log.error(
                    "alerts.urls[%d] (%s://…) is not a URL apprise understands; "
                    "alerts will not go there",
                    i,
                    scheme,
                )
        return app

    # -- the Notifier protocol ------------------------------------------------

    def notify(self, kind: str, route: str | None, message: str) -> None:
        log.warning("alert: %s", message, extra={"alert.kind": kind, "ketter.route": route})
        with self._lock:
            alerts = self.throttle.offer(kind, route, message, self.clock())
        for alert in alerts:
            self._enqueue(alert)

    # -- the sender ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ketter-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    def tick(self) -> None:
        """Queue the summaries of held-back alerts that are due."""
        with self._lock:
            alerts = self.throttle.due(self.clock())
        for alert in alerts:
            self._enqueue(alert)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0 or not self._queue.all_tasks_done.wait(left):
                    return False
        return True

    def _enqueue(self, alert: Alert) -> None:
        if self._apprise is None:
            return  # no URL configured: the log line above is the alert
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.warning(
                "alert queue full (%d waiting): %s alert dropped", self._queue.qsize(), alert.kind
            )

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=TICK)
            except queue.Empty:
                self.tick()
                continue
            try:
                if item is _STOP:
                    return
                assert isinstance(item, Alert)
                self.send(item)
            finally:
                self._queue.task_done()

    def send(self, alert: Alert) -> bool:
        """Deliver one alert now (in the sender thread); never raises."""
        apprise = _apprise()
        title = f"[Ketter {self.node}] {KINDS.get(alert.kind, alert.kind)}"
        if alert.route:
            title += f" on route {alert.route}"
        if alert.summary:
            title += " (held back)"
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.clock()))
        body = f"{alert.body}\n\nnode {self.node}, {when}"
        kind = apprise.NotifyType.FAILURE if alert.failure else apprise.NotifyType.WARNING
        try:
            ok = bool(
                self._apprise.notify(  # type: ignore[attr-defined]
                    body=body,
                    title=title,
                    notify_type=kind,
                )
            )
        except Exception as exc:  # a plugin bug must not kill the sender
            ok = False
            log.warning("alert delivery raised %s", redact(repr(exc), self._secrets))
        if not ok:
            log.warning(
                "alert delivery failed (%s on %s); apprise logged why",
                alert.kind,
                alert.route or "-",
            )
        return ok


def build_notifier(config: Config, *, start: bool = True) -> AppriseNotifier:
    """The notifier for a service process, its sender thread started."""
    notifier = AppriseNotifier.from_config(config)
    if start:
        notifier.start()
    return notifier
