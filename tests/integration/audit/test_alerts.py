"""Alerts delivered through apprise to a local HTTP receiver (json://)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ketter.alerts import AppriseNotifier
from ketter.alerts.notifier import secrets_of


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.posts.append(json.loads(self.rfile.read(length)))
                received.paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def notifier(urls: tuple[str, ...], clock: Clock, **kw: object) -> AppriseNotifier:
    n = AppriseNotifier(urls, node="node-7", min_interval=300, failures_count=2,
                        failures_window=900, clock=clock, **kw)  # type: ignore[arg-type]
    n.start()
    return n


def test_alert_content_reaches_the_webhook(receiver: Receiver) -> None:
    clock = Clock()
    n = notifier((f"json://127.0.0.1:{receiver.port}/",), clock)
    try:
        n.notify("job_failed", "ingest", "job 4 on route ingest failed: a.mov: disk full")
        assert n.flush(10)
    finally:
        n.stop()
    (post,) = receiver.posts
    assert post["title"] == "[Ketter node-7] job failed on route ingest"
    assert post["message"].startswith("job 4 on route ingest failed: a.mov: disk full")
    assert "node node-7, 2027-01-15" in post["message"]
    assert post["type"] == "failure"


def test_throttled_then_summarised_then_route_failures(receiver: Receiver) -> None:
    clock = Clock()
    n = notifier((f"json://127.0.0.1:{receiver.port}/",), clock)
    try:
        n.notify("stalled", "dub", "job 1 stalled")
        n.notify("stalled", "dub", "job 2 stalled")
        n.notify("stalled", "dub", "job 3 stalled")
        clock.now += 301
        n.tick()
        for i in range(3):
            n.notify("job_failed", "qc", f"job {10 + i} failed")
        assert n.flush(10)
    finally:
        n.stop()
    titles = [p["title"] for p in receiver.posts]
    assert titles == ["[Ketter node-7] job stalled on route dub",
                      "[Ketter node-7] job stalled on route dub (held back)",
                      "[Ketter node-7] job failed on route qc",
                      "[Ketter node-7] repeated failures on a route on route qc"]
    assert "2 more 'stalled' alert(s) were held back" in receiver.posts[1]["message"]
    assert "- job 3 stalled" in receiver.posts[1]["message"]
    assert "3 failures on route qc within 900 s" in receiver.posts[3]["message"]


def test_delivery_failure_is_logged_without_secrets_and_never_blocks(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = "json://ops:hunter2pass@127.0.0.1:9/T0KEN-abcdef?x=querysecret"  # port 9: refused
    clock = Clock()
    n = notifier((url,), clock)
    try:
        t0 = time.monotonic()
        for i in range(5):
            n.notify(f"route_paused{i}", "r", "share gone")
        assert time.monotonic() - t0 < 1.0  # notify() only queues
        assert n.flush(30)
    finally:
        n.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "alert delivery failed" in text
    for secret in ("hunter2pass", "T0KEN-abcdef", "querysecret"):
        assert secret not in text


def test_full_queue_drops_instead_of_blocking(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    n = AppriseNotifier(("json://127.0.0.1:9/",), node="n", min_interval=0, failures_count=99,
                        failures_window=1, clock=clock, queue_size=2)  # sender not started
    for i in range(4):
        n.notify("stalled", f"r{i}", "x")
    assert "alert queue full" in caplog.text


def test_secrets_of_an_url() -> None:
    found = secrets_of(["slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"])
    assert "TIiajkdnlazkcOXrIdevi7FQ" in found
