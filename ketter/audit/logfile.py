"""The audit log's files: the current JSON-lines file and its rotated copies.

``audit.log_file`` (say ``logs/audit.jsonl``) is the file being written.
Rotation renames it to ``audit.<UTC yyyymmddThhmmssZ>.<last seq>.jsonl``
beside it (names sort in chain order; ``audit*.jsonl`` matches them all for a
Splunk monitor input or a Filebeat path) and starts a new one. Lines are
whole: a line is written with its newline in one ``write``, and a crash that
leaves a partial last line is repaired by the next writer (the partial line
is cut off and its record shipped again from the job store).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_ROTATED = re.compile(r"^\.(\d{8}T\d{6}Z)\.(\d+)$")


class _LineFormatter(JsonFormatter):
    """python-json-logger, writing exactly the fields it is given (no logger
    name, level or time of the *logging* call: those belong to the ops log)."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data.update(message_dict)


_FORMATTER = _LineFormatter(json_ensure_ascii=False)


def format_line(fields: dict[str, Any]) -> str:
    """One JSON line (without its newline) for ``fields``: python-json-logger's
    serializer, without building a ``LogRecord`` per line (the shipper
    writes one line per event)."""
    return _FORMATTER.serialize_log_record(fields)


@dataclass(frozen=True)
class LastLine:
    """Where a log file ends: its last whole line and the byte offset after it."""

    seq: int
    digest: str
    ts: str
    end: int


class AuditFiles:
    """Naming and listing of the current file and the rotated ones."""

    def __init__(self, log_file: str) -> None:
        self.path = os.path.abspath(log_file)
        self.directory, name = os.path.split(self.path)
        self.stem, self.ext = os.path.splitext(name)

    def rotated_name(self, now: float, last_seq: int) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        return os.path.join(self.directory, f"{self.stem}.{stamp}.{last_seq:012d}{self.ext}")

    def rotated(self) -> list[str]:
        """Rotated files, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not (name.startswith(self.stem) and name.endswith(self.ext)):
                continue
            middle = name[len(self.stem) : len(name) - len(self.ext)]
            m = _ROTATED.match(middle)
            if m:
                found.append((int(m.group(2)), m.group(1), name))
        return [os.path.join(self.directory, n) for _, _, n in sorted(found)]

    def all_files(self) -> list[str]:
        """Rotated files then the current one: the whole log in chain order."""
        files = self.rotated()
        if os.path.exists(self.path):
            files.append(self.path)
        return files

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[bool]:
        """An exclusive, non-blocking lock: one shipper per log file, so two
        processes never interleave lines. Yields False when someone else has it."""
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def parse_tail(data: bytes) -> LastLine | None:
    """The last whole line in ``data`` that is an audit record."""
    end = data.rfind(b"\n") + 1
    if end == 0:
        return None
    start = data.rfind(b"\n", 0, end - 1) + 1
    fields = json.loads(data[start:end])
    return LastLine(fields["event.sequence"], fields["ketter.hash"], fields["@timestamp"], end)


def last_line(path: str, chunk: int = 1 << 16) -> LastLine | None:
    """The last whole line of a log file, reading only its end."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        offset = size
        data = b""
        while offset > 0:
            step = min(chunk, offset)
            offset -= step
            data = os.pread(fd, step, offset) + data
            # A newline before the last one: the last whole line is in view.
            last_nl = data.rfind(b"\n")
            if last_nl > 0 and data.rfind(b"\n", 0, last_nl) != -1:
                break
        found = parse_tail(data)
        if found is None:
            return None
        return LastLine(found.seq, found.digest, found.ts, found.end + offset)
    finally:
        os.close(fd)


def first_timestamp(path: str) -> str | None:
    """``@timestamp`` of the first line of a file (for daily rotation)."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline()
    except FileNotFoundError:
        return None
    if not line.endswith(b"\n"):
        return None
    return str(json.loads(line)["@timestamp"])


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
