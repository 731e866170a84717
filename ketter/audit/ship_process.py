"""The audit shipper in a process of its own, beside the workers.

Shipping costs Python CPU per event (each record's JSON line and its chain
check): as a thread of ``ketter workers`` it took the interpreter lock a
tenth of the time from the threads that copy (py-spy on a 2,000-file run,
docs/performance-watcher.md). The workers process starts it as a child,
``ketter audit ship --follow``, and stops it after its own last event; the
child then ships what is left and exits, as the thread did.

The child dies with the workers process (``PR_SET_PDEATHSIG``, set by the
child itself: the workers process has threads by then, and a
``preexec_fn`` is not safe in a process with threads), so a kill -9 of the
workers leaves no shipper behind: the next start ships from the log's last
whole line, as after a kill of the thread. A child that exits on its own is
started again. The log's lock (:mod:`ketter.audit.logfile`) still keeps a
second shipper from writing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from ketter.config import Config

log = logging.getLogger("ketter.audit")

#: A shipper that exited on its own is started again at most this often.
RESTART_EVERY = 5.0


class ShipperProcess:
    """``ketter audit ship --follow`` as a child of this process (the
    :class:`ketter.audit.shipper.AuditShipper` thread's ``start``/``stop``)."""

    def __init__(self, config: Config) -> None:
        if not config.path:
            raise ValueError("a shipper process needs a config file (it reads it)")
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0

    def start(self) -> None:
        # As this process was started (`-I` under the units), by module.
        isolated = ["-I"] if sys.flags.isolated else []
        argv = [sys.executable, *isolated, "-m", "ketter", "--config", str(self.config.path)]
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # only the main process talks to systemd
        self.proc = subprocess.Popen(
            [*argv, "audit", "ship", "--follow", "--parent", str(os.getpid())],
            env=env,
            start_new_session=True,  # a Ctrl-C reaches this process, which stops it
        )
        self._started_at = time.monotonic()

    def check(self) -> None:
        """Start the shipper again if it exited on its own."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        if time.monotonic() - self._started_at < RESTART_EVERY:
            return
        log.error(
            "the audit shipper exited on its own; starting it again",
            extra={"ketter.pid": proc.pid, "ketter.exit_code": proc.returncode},
        )
        self.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ship what is left, then stop: one SIGTERM, then SIGKILL after
        ``timeout`` (what was not shipped is shipped at the next start)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the audit shipper did not stop in time", extra={"ketter.pid": proc.pid})
            proc.kill()
            proc.wait()
