"""Operational logs: JSON lines on stderr for journald (not the audit trail).

One handler on the root logger, installed once per process (huey's own
loggers propagate to it, so there are no duplicate lines). Field names follow
the audit log's ECS names where they overlap (``ketter.job_id``, ``file.path``)
so one search finds a job in both.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from pythonjsonlogger.json import JsonFormatter

_installed = False


class _Formatter(JsonFormatter):
    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["@timestamp"] = self.formatTime(record)
        log_record["log.level"] = record.levelname.lower()
        log_record["log.logger"] = record.name
        log_record["host.name"] = _HOST
        log_record["process.pid"] = os.getpid()
        log_record.pop("levelname", None)
        log_record.pop("name", None)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        import time

        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
            f".{int(record.msecs):03d}Z"
        )


_HOST = socket.gethostname()


def setup_logging(level: str | int = "INFO") -> None:
    """Send every logger's records to stderr as JSON (idempotent)."""
    global _installed
    root = logging.getLogger()
    root.setLevel(os.environ.get("KETTER_LOG_LEVEL", level))
    if _installed:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    root.handlers[:] = [handler]
    # Huey logs two lines per task ("Executing …", "… executed in"): noise
    # next to the audit trail, and a JSON line each per transfer. Its
    # consumer's start/stop lines and every warning stay.
    logging.getLogger("huey").setLevel(logging.WARNING)
    logging.getLogger("huey.consumer").setLevel(logging.INFO)
    _installed = True


def job_fields(job_id: int | None = None, route: str | None = None, **more: object) -> dict:
    """``extra=`` for a log call about a job."""
    fields: dict[str, object] = {}
    if job_id is not None:
        fields["ketter.job_id"] = job_id
    if route is not None:
        fields["ketter.route"] = route
    fields.update(more)
    return {"extra": fields}
