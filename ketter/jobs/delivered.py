"""One line in the service log per delivery (issue #14 finding 19).

The audit log records every step, but operators look for deliveries in
journald (``journalctl -u ketter-workers | grep 'job completed'``), where
only errors used to appear. After a worker has run its claimed jobs, each
one that this claim completed is logged once, as JSON on stderr (see
:mod:`ketter.runtime.logs`): route, source, destination, bytes, seconds (the
active copy + read-back time, as in ``job_history``) and sha256.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ketter.jobs.claim import Claimed
from ketter.paths import readable

if TYPE_CHECKING:
    from ketter.store.port import JobStore
    from ketter.store.rows import JobRow

log = logging.getLogger("ketter.jobs")


def log_completed(store: JobStore, claims: Iterable[Claimed]) -> None:
    """Log the jobs among ``claims`` that ended ``completed`` under that
    claim (a job another worker took over, or one still retrying, is not)."""
    tokens = {c.job_id: c.claim for c in claims}
    if not tokens:
        return
    try:
        jobs = store.delivered(tokens)
    except Exception:  # the log line must never fail a delivery that is done
        log.exception("could not read the completed jobs for the log")
        return
    log_delivered(jobs)


def log_delivered(jobs: Iterable[JobRow]) -> None:
    """Log each of ``jobs``, completed rows (as read, or as the steps that
    completed them wrote them: a batch's, :mod:`ketter.jobs.batch`)."""
    for job in jobs:
        log.info(
            "job completed",
            extra={
                "ketter.job_id": job.id,
                "ketter.route": job.route,
                "ketter.mode": job.mode,
                "file.path": readable(job.source_path),
                "ketter.destination": job.dest_display,
                "ketter.files": job.file_count,
                "ketter.bytes": job.size,
                "ketter.seconds": job.transfer_seconds,
                "ketter.sha256": job.sha256,
                "ketter.attempt": job.attempt,
            },
        )


__all__ = ["log_completed", "log_delivered"]
