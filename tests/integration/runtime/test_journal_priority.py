"""Log lines carry their syslog priority when stderr is the journal (#15).

journald reads a ``<N>`` prefix on each stderr line as the line's PRIORITY
(``SyslogLevelPrefix=yes``); without it every warning and error of the
services was stored at priority 6 and ``journalctl -p warning`` showed none.
systemd names the journal stream in ``$JOURNAL_STREAM`` (``DEVICE:INODE``),
which is how the process tells the journal from a terminal. Here a real
process logs through :func:`ketter.runtime.logs.setup_logging` with its
stderr on a file the test names the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROGRAM = r"""
import logging
from ketter.runtime.logs import setup_logging

setup_logging()
log = logging.getLogger("ketter.workers")
log.debug("a debug line")
log.info("a job completed")
log.warning("a route paused")
log.error("a job failed")
log.critical("the store is lost")
log.log(25, "a level between info and warning")
try:
    raise ValueError("boom\nsecond line")
except ValueError:
    log.exception("an unexpected error")
"""

#: message -> the syslog priority journald must store it at.
EXPECTED = {
    "a debug line": 7,
    "a job completed": 6,
    "a route paused": 4,
    "a job failed": 3,
    "the store is lost": 2,
    "a level between info and warning": 6,
    "an unexpected error": 3,
}


def _run(tmp_path: Path, journal: bool) -> list[str]:
    err = tmp_path / "stderr"
    with err.open("wb") as fh:
        st = os.fstat(fh.fileno())
        env = dict(os.environ, PYTHONPATH=str(ROOT), KETTER_LOG_LEVEL="DEBUG")
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        else:  # another stream's (a terminal's): not this stderr
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1}"
        subprocess.run([sys.executable, "-c", PROGRAM], stderr=fh, env=env, check=True)
    return err.read_text(encoding="utf-8").splitlines()


def test_each_line_starts_with_its_syslog_priority_on_the_journal(tmp_path: Path) -> None:
    lines = _run(tmp_path, journal=True)
    assert len(lines) == len(EXPECTED), lines  # a traceback stays on its one line
    seen = {}
    for line in lines:
        assert line.startswith("<") and ">" in line, line
        prefix, _, rest = line.partition(">")
        record = json.loads(rest)
        seen[record["message"]] = int(prefix[1:])
    assert seen == EXPECTED


def test_no_prefix_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    lines = _run(tmp_path, journal=False)
    assert len(lines) == len(EXPECTED), lines
    assert [json.loads(line)["message"] for line in lines] == list(EXPECTED)
