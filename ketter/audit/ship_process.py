"""The audit shipper in a process of its own, beside the workers.

Shipping costs Python CPU per event (each record's JSON line and its chain
check): as a thread of ``ketter workers`` it took the interpreter lock
about a tenth of the time from the threads that copy (py-spy on a
2,000-file run, docs/performance-watcher.md). The workers process starts it
as a child, ``ketter audit ship --follow``, and stops it after its own last
event; the child then ships what is left and exits, as the thread did.

* The child is started with SIGTERM, SIGINT and SIGHUP blocked (it
  inherits the mask until it has installed its own handlers): a stop that
  comes while it starts is acted on once it can ship, never by the default
  action that would kill it before its last pass.
* It dies with the workers process (``PR_SET_PDEATHSIG``, set by the child
  itself: the workers process has threads by then, and a ``preexec_fn`` is
  not safe in a process with threads), so a kill -9 of the workers leaves
  no shipper behind: the next start ships from the log's last whole line,
  as after a kill of the thread.
* One that exits on its own is started again (after 5 s, doubling up to a
  minute while it keeps exiting soon after its start).
* If it did not end with a clean last pass (killed, failed, or gone before
  the stop), the workers ship what is left themselves at the stop.

The log's lock (:mod:`ketter.audit.logfile`) still keeps a second shipper
from writing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from ketter.audit.shipper import AuditShipper
from ketter.config import Config
from ketter.runtime.children import ketter_command

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.audit")

#: A shipper that exited on its own is started again after this long ...
RESTART_AFTER = 5.0
#: ... doubled while it keeps exiting within this long of its start, up to:
SHORT_LIFE = 60.0
RESTART_AFTER_MAX = 60.0
#: Blocked in the child until it can act on them (see the module docstring).
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class ShipperProcess:
    """``ketter audit ship --follow`` as a child of this process (the
    :class:`~ketter.audit.shipper.AuditShipper` thread's ``start``/``stop``)."""

    def __init__(self, config: Config, store: JobStore) -> None:
        if not config.path:
            raise ValueError("a shipper process needs a config file (it reads it)")
        self.config = config
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._delay = RESTART_AFTER
        self._short_exits = 0
        self._exited_at: float | None = None

    def start(self) -> None:
        argv, env = ketter_command(str(self.config.path))
        # The child inherits the mask: blocked until its handlers are in.
        before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.proc = subprocess.Popen(
                [*argv, "audit", "ship", "--follow", "--parent", str(os.getpid())],
                env=env,
                start_new_session=True,  # a Ctrl-C reaches this process, which stops it
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        self._started_at = time.monotonic()
        self._exited_at = None

    def check(self) -> None:
        """Start the shipper again if it exited on its own (call it from the
        thread that started it: the child dies with that thread)."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        now = time.monotonic()
        if self._exited_at is None:
            self._exited_at = now
            # 5 s; doubled for each exit in a row that came soon after its start.
            short = now - self._started_at < SHORT_LIFE
            self._short_exits = self._short_exits + 1 if short else 1
            self._delay = min(RESTART_AFTER * 2 ** (self._short_exits - 1), RESTART_AFTER_MAX)
            log.error(
                "the audit shipper exited on its own; starting it again in %.0fs",
                self._delay,
                extra={"ketter.pid": proc.pid, "ketter.exit_code": proc.returncode},
            )
        if now - self._exited_at < self._delay:
            return
        try:
            self.start()
        except OSError:
            log.exception("the audit shipper could not be started; trying again")
            self._exited_at = None  # counted as one more short exit
            self._started_at = now

    def stop(self, timeout: float = 30.0) -> None:
        """Ship what is left, then stop: one SIGTERM, SIGKILL after
        ``timeout``. A child that did not end with its clean last pass
        leaves that pass to this process."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        clean = proc.poll() is None
        if clean:
            proc.send_signal(signal.SIGTERM)
            try:
                clean = proc.wait(timeout) == 0
            except subprocess.TimeoutExpired:
                log.error("the audit shipper did not stop in time", extra={"ketter.pid": proc.pid})
                proc.kill()
                proc.wait()
                clean = False
        else:
            proc.wait()
        if not clean:
            self._ship_here()

    def _ship_here(self) -> None:
        shipper = None
        try:
            shipper = AuditShipper(self.config, store=self.store)
            shipper.drain()
        except Exception:
            # Nothing is lost: the events wait in the job store for the next start.
            log.exception("the audit log could not be brought up to date at stop")
        finally:
            if shipper is not None:
                shipper.close()
