"""The workers' path in this process, for the engine's integration tests
(issue #16 item 4: the test-only ``engine.transfer.transfer()`` driver goes).

A config with the test's routes under its folder, the real job store, a node
built for the ``workers`` role, jobs submitted as ``ketter enqueue`` does and
run one claim at a time by the workers' :class:`~ketter.jobs.runner.JobRunner`
(its :class:`~ketter.jobs.steps.Attempt` or, for small files, its batch, and
its error policy). Hooks get each progress report of a running job: the
mid-copy moments the tests act at.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ketter.config import parse_config
from ketter.jobs.lease import ActiveJob, LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.node import Node
from ketter.runtime.signals import Shutdown
from ketter.store.models import Job
from ketter.store.port import JobStore
from ketter.store.rows import JobRow

#: Where a job ends or waits after an attempt (the runner's answers).
SETTLED = ("completed", "failed", "superseded", "retry_wait")


@dataclass
class Alerts:
    """The alerts the workers sent (a list instead of apprise)."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def notify(self, kind: str, route: str | None, message: str) -> None:
        self.sent.append((kind, message))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.sent]


class Workers:
    """The workers of ``routes`` (name → route keys, as in the YAML; the
    roots relative to ``base``), run in this process. ``close()`` when done."""

    def __init__(self, base: bytes, routes: dict[str, dict[str, Any]]) -> None:
        self.base = base
        shown = os.fsdecode(base)
        lines = [
            f"state_dir: {json.dumps(shown + '/state')}",
            "node: n1",
            # A 1 MiB checkpoint (a quarter of it): copies report progress
            # every MiB, so a hook acts while the copy still has bytes to go.
            "resume_min_bytes: 4MiB",
            "retry: {max_attempts: 3, base_delay: 0.1s, max_delay: 0.2s}",
            "routes:",
        ]
        for name, keys in routes.items():
            entry = {"name": name, "min_free": "0", **keys}
            lines.append(f"  - {json.dumps(entry)}")
        self.config = parse_config("\n".join(lines) + "\n", base_dir=shown)
        self.alerts = Alerts()
        self.node = Node.from_config(self.config, "workers", notifier=self.alerts)
        assert self.node.store is not None
        self.store: JobStore = self.node.store
        #: Called with each progress report of a running job.
        self.hooks: list[Callable[[ActiveJob], None]] = []

    def close(self) -> None:
        self.node.close()

    def runner(self) -> JobRunner:
        shutdown = Shutdown()
        return JobRunner(
            self.config,
            store=self.store,
            shutdown=shutdown,
            keeper=LeaseKeeper(self.config, shutdown, store=self.store),
            notifier=self.alerts,
            on_progress=self._progress,
        )

    def _progress(self, active: ActiveJob) -> None:
        for hook in list(self.hooks):
            hook(active)

    def submit(self, route: str, path: bytes) -> list[int]:
        """The jobs of ``path`` (``ketter enqueue``: one per file of a
        ``per_file`` folder)."""
        found = submit_path(
            self.store, self.config, self.config.route(route), path, now=time.time()
        )
        return [s.job_id for s in found]

    def run(self, job_id: int) -> JobRow:
        """One attempt of ``job_id``, made due first (small files of its
        route may run with it as a batch)."""
        job = self.store.get_job(job_id)
        if job.state not in SETTLED[:3]:
            # A test's poke inside the store: due now, whatever the backoff.
            Job.update(next_attempt_at=0).where(Job.id == job_id).execute()
            self.runner().handle(job_id)
        return self.store.get_job(job_id)

    def transfer(self, route: str, path: bytes) -> list[JobRow]:
        """Submit ``path`` and run one attempt of each of its jobs, in order."""
        return [self.run(job_id) for job_id in self.submit(route, path)]


def events(job_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The job's audit events, in order: (name, details)."""
    from ketter.store.models import Event

    rows = Event.select().where(Event.job_id == job_id).order_by(Event.id)
    return [(e.event, json.loads(e.details)) for e in rows]


class Once:
    """A hook that runs ``action`` at the first report of ``phase`` with
    bytes done (more may come); ``fired`` says whether it ran."""

    def __init__(self, phase: str, action: Callable[[], None]) -> None:
        self.phase = phase
        self.action = action
        self.fired = False

    def __call__(self, active: ActiveJob) -> None:
        if not self.fired and active.phase == self.phase and active.bytes_done > 0:
            self.fired = True
            self.action()
