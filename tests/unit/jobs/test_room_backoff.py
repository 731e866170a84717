"""A destination that refuses writes while it shows free space (review of
issue #14 finding 17).

With a quota (EDQUOT), or when another writer took the space, statvfs still
shows room: the sweep resumed the route at once, the job hit EDQUOT again,
the route paused again — a route_paused/route_resumed pair and an alert
every retry.max_delay, for ever. Now only the first pause of the episode
alerts, each later resume waits twice as long (up to 15 min), no attempt is
used, and one delivery ends the episode.

Real store, real files, an injected clock; the quota is played at the
syscall boundary only: ``os.write``/``os.pwrite``/``os.pwritev`` on a file
below the destination fail with EDQUOT, as a quota makes the kernel do (a
tmpfs has no quotas to fill).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import parse_config
from ketter.health import check_health
from ketter.jobs.lease import LeaseKeeper
from ketter.jobs.routes import room_pauses_before
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.jobs.sweep import sweep
from ketter.runtime.signals import Shutdown
from ketter.store import open_store
from ketter.store.models import Event, Job, RouteStatus
from ketter.store.sqlite import SqliteJobStore
from tests.conftest import KETTER, cli_env


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, str]] = []

    def notify(self, kind: str, route: str | None, message: str) -> None:
        self.sent.append((kind, route, message))


class Quota:
    """EDQUOT from the write syscalls on files below ``root`` while on."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = os.path.realpath(root) + os.sep
        self.on = True
        for name in ("write", "pwrite", "pwritev"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real):  # type: ignore[no-untyped-def]
        def call(fd: int, *args):  # type: ignore[no-untyped-def]
            if self.on:
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    target = ""
                if target.startswith(self.root):
                    raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
            return real(fd, *args)

        return call


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("q_in", "q_out"):
        (tmp_path / name).mkdir()
    text = f"""
state_dir: {tmp_path}/state
retry: {{max_attempts: 3, base_delay: 10s, max_delay: 60s, jitter: false}}
lease: {{ttl: 30s, heartbeat: 5s, stall_timeout: 60s}}
routes:
  - {{name: q, source: q_in, destination: q_out, min_free: 0%}}
"""
    (tmp_path / "ketter.yaml").write_text(text)
    config = parse_config(text, base_dir=str(tmp_path))
    db = open_store(config.db_path)
    store = SqliteJobStore(db, AuditChain(node=config.node))
    clock = Clock(time.time())
    shutdown = Shutdown()
    alerts = Alerts()
    runner = JobRunner(
        config,
        store=store,
        shutdown=shutdown,
        keeper=LeaseKeeper(config, shutdown, store=store),
        clock=clock,
        ring=lambda job_id, delay: None,
        notifier=alerts,
    )

    class Env:
        pass

    e = Env()
    e.root, e.config, e.clock, e.runner, e.alerts = tmp_path, config, clock, runner, alerts
    e.store = store

    def add(name: str) -> int:
        path = tmp_path / "q_in" / name
        path.write_bytes(os.urandom(1000))
        (result,) = submit_path(store, config, config.route("q"), os.fsencode(path), now=clock.now)
        return result.job_id

    def resumes() -> bool:
        report = sweep(store, config, now=clock.now, pending=lambda: 0, ring=lambda _: None)
        return report.resumed_routes == ["q"]

    e.add, e.resumes = add, resumes
    e.quota = Quota(tmp_path / "q_out", monkeypatch)
    yield e
    db.close()


def _route_events(kind: str) -> int:
    return Event.select().where((Event.event == kind) & (Event.route == "q")).count()


def test_a_quota_pauses_the_route_with_growing_gaps_and_one_alert(env) -> None:
    job_id = env.add("reel.mov")
    # Doubling from retry.max_delay (60 s), capped at 15 min.
    for gap in (60, 120, 240, 480, 900, 900, 900):
        env.runner.handle(job_id)
        status = RouteStatus.get_by_id("q")
        assert status.paused == 1, Job.get_by_id(job_id).error
        job = Job.get_by_id(job_id)
        assert (job.state, job.attempt) == ("retry_wait", 0)  # no attempt used
        assert "quota or space taken by another writer" in status.reason
        assert "free space shown" in status.reason and "the job needs 1000 bytes" in status.reason
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(env.clock.now + gap))
        assert f"next try at {at}" in status.reason, status.reason
        env.clock.now += gap - 1
        assert not env.resumes()  # backing off, though the disk shows room
        env.clock.now += 1
        assert env.resumes()
    assert _route_events("route_paused") == 7 and _route_events("route_resumed") == 7
    assert [kind for kind, _, _ in env.alerts.sent] == ["route_paused"]  # one per episode
    assert "quota or space taken by another writer" in env.alerts.sent[0][2]

    # While paused, health and status say why and when the next try is.
    env.runner.handle(job_id)
    reason = RouteStatus.get_by_id("q").reason
    health = check_health(env.config, now=env.clock.now)
    (route_check,) = [c for c in health.checks if c.name == "route q"]
    assert not route_check.ok and reason in route_check.detail, route_check.detail
    status_out = subprocess.run(
        [*KETTER, "status", "--json", "--config", str(env.root / "ketter.yaml")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=True,
    )
    assert [p["reason"] for p in json.loads(status_out.stdout)["paused"]] == [reason]

    # The quota is raised: the job is delivered and the episode ends.
    env.quota.on = False
    env.clock.now += 900
    assert env.resumes()
    env.runner.handle(job_id)
    job = Job.get_by_id(job_id)
    assert (job.state, job.attempt) == ("completed", 1)
    assert room_pauses_before(env.store, "q") == 0

    # The next refusal is a new episode: alerted again, backoff from the start.
    env.quota.on = True
    env.clock.now += 1
    second = env.add("reel2.mov")
    env.runner.handle(second)
    assert RouteStatus.get_by_id("q").paused == 1
    env.clock.now += 59
    assert not env.resumes()
    env.clock.now += 1
    assert env.resumes()
    assert [kind for kind, _, _ in env.alerts.sent] == ["route_paused", "route_paused"]
