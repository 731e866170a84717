"""A watcher among several nodes (issue #18): the routes another node
leads, and the moment this node takes one. The route locks themselves are
PostgreSQL's (tests/integration/test_postgres_watcher_locks.py); here a
lock manager that grants what the test says stands for the other node, and
the watcher, its routes and its store are real."""

from __future__ import annotations

import errno
import logging
import shutil
from typing import Any

import pytest

from ketter.watcher import route_watch
from tests.integration.watcher.support import wait_for, write


class Locks:
    """The route locks as another node leaves them: ``grant`` says which."""

    error = None
    problem = None

    def __init__(self, grant: bool) -> None:
        self.grant = grant
        self.asked: list[set[str]] = []

    def refresh(self, wanted: set[str]) -> set[str]:
        self.asked.append(set(wanted))
        return set(wanted) if self.grant else set()

    def close(self) -> None:
        pass


def test_a_follower_could_watch_is_not_lost_and_one_that_cannot_says_why(make_env) -> None:
    env = make_env(ingest={})
    locks = Locks(grant=False)
    watcher = env.watcher(locks=locks)
    watcher.start()
    watcher.tick()
    route = watcher.routes[0]
    assert not route.leading and locks.asked[-1] == {"ingest"}
    assert route.status()["lost"] is False  # it said "lost" from its start
    shutil.rmtree(env.source("ingest"))
    watcher._next_lock_check = 0.0
    watcher.tick()
    assert locks.asked[-1] == set()  # not asked for while it cannot watch it
    status = route.status()
    assert status["lost"] is True and "does not exist" in status["reason"], status
    assert env.events("watch_lost", "ingest")
    env.source("ingest").mkdir(parents=True)
    watcher._next_lock_check = 0.0
    watcher.tick()
    assert locks.asked[-1] == {"ingest"} and route.status()["lost"] is False
    assert env.events("watch_restored", "ingest")
    watcher.close()


def test_a_store_failing_in_a_followers_check_does_not_end_the_watcher(
    make_env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The follower's lost watch is written to the chain; a store failing at
    that moment (with the share: the node's link down) is the route's
    trouble, logged, not an exception out of the watcher's loop."""
    env = make_env(ingest={}, other={})
    locks = Locks(grant=False)
    watcher = env.watcher(locks=locks)
    watcher.start()
    watcher.tick()
    shutil.rmtree(env.source("ingest"))

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("server closed the connection unexpectedly")

    monkeypatch.setattr(env.store, "transaction", failing)
    watcher._next_lock_check = 0.0
    with caplog.at_level(logging.ERROR):
        watcher.tick()  # does not raise
    assert locks.asked[-1] == {"other"}
    assert "route availability check failed" in caplog.text


def test_a_route_whose_start_fails_as_it_is_taken_starts_at_the_next_tick(
    make_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken with a root that fails as its watch starts (a share's transient
    I/O error): the route is not left "watching" with no scanner, and the
    next tick starts it."""
    env = make_env(ingest={})
    watcher = env.watcher(locks=Locks(grant=True))
    real = route_watch.mounts.choose_watch
    failures = [OSError(errno.EIO, "Input/output error")]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(route_watch.mounts, "choose_watch", flaky)
    watcher.start()
    watcher.tick()
    assert not failures  # the start failed once
    write(env.source("ingest") / "a.mov")
    wait_for(lambda: watcher.tick() or env.jobs("ingest"), message="the file's job")
    watcher.close()
