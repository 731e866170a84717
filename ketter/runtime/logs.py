"""Operational logs: JSON lines on stderr for journald (not the audit trail).

One handler on the root logger, installed once per process (huey's own
loggers propagate to it, so there are no duplicate lines). Field names follow
the audit log's ECS names where they overlap (``ketter.job_id``, ``file.path``)
so one search finds a job in both.

When stderr is the journal, each line starts with ``<N>``, the syslog
priority of the record's level (:func:`syslog_priority`): journald strips the
prefix and keeps it as ``PRIORITY`` (``SyslogLevelPrefix=yes``, the default),
so ``journalctl -p warning -t ketter-workers`` finds the warnings and errors.
Without it every line was priority 6 (info). systemd tells a service that
its stderr is the journal with ``$JOURNAL_STREAM`` (``DEVICE:INODE`` of that
stream); in a terminal or a test the lines stay plain JSON. The workers'
child processes inherit both the stream and the variable.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

_installed = False

#: Python log level -> syslog priority (RFC 5424): the lowest level of each band.
_PRIORITIES = (
    (logging.CRITICAL, 2),  # crit
    (logging.ERROR, 3),  # err
    (logging.WARNING, 4),  # warning
    (logging.INFO, 6),  # info (Python has no "notice")
)
_DEBUG = 7


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python log level (custom levels by band)."""
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return _DEBUG


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is the journal stream systemd
    named in ``$JOURNAL_STREAM``."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class _Formatter(JsonFormatter):
    #: Start each line with ``<N>`` (stderr is the journal).
    priority_prefix = False

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.priority_prefix:
            return f"<{syslog_priority(record.levelno)}>{line}"
        return line

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
    formatter = _Formatter("%(message)s")
    formatter.priority_prefix = stderr_is_journal(sys.stderr)
    handler.setFormatter(formatter)
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
