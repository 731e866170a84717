"""More than one process of one service: the extra ``ketter workers``
(``worker_processes``) and ``ketter api`` (``api.processes``) processes.

Why: the threads of one process share one interpreter lock. With many small
files the workers are bound by Python CPU per file (a second process on the
second core delivered 15–20 % more files per second end to end,
docs/performance-watcher.md); the API by Python CPU per request
(docs/performance.md, the HTTP API). Several processes of one service on
one node are safe as they are: claims, leases and fencing tokens are per
thread, the audit log has one writer at a time (its lock), and each API
request opens what it uses.

The main process starts the others as children (the same command with the
arguments that make it one extra process) before it starts any thread, each
in its own session (a Ctrl-C on the terminal reaches only the main process)
and with ``PR_SET_PDEATHSIG``: if the main process dies, even by SIGKILL, so
do they, as its threads would. When the main process is asked to stop, it
sends each child one SIGTERM (a second would make a workers process exit at
once, without its checkpoint) and waits for them. A child that exits on its
own stops the main process, which then exits 1 and is restarted by systemd;
the units use ``KillMode=mixed`` so that systemd's SIGTERM reaches the main
process only.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from ketter.config import Config
from ketter.runtime.lifeline import die_with
from ketter.runtime.signals import Shutdown

log = logging.getLogger("ketter.runtime")


#: What a child gets blocked until its handlers are in.
STOP_AND_RELOAD = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


#: Set for every child: the pid of the service's main process (the one
#: systemd started), which its heartbeats name (:func:`service_pid`).
SERVICE_ENV = "KETTER_SERVICE_PID"


def service_pid() -> int:
    """The pid of this process's service: its main process's, for an extra
    process (or a child of one, such as its audit shipper); its own for the
    main process. ``ketter health`` ties the heartbeats of one service's
    processes together by it: they share one row per component and node."""
    try:
        return int(os.environ.get(SERVICE_ENV) or os.getpid())
    except ValueError:
        return os.getpid()


def ketter_command(config_path: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a Ketter child process reading
    ``config_path`` (its subcommand's arguments follow).

    As this process was started: `-I` under the units (docs/operations.md),
    so a child never puts the working directory on sys.path; `-m ketter`
    (ketter/__main__.py): `-m ketter.cli.main` warned at every start (a
    module of an already imported package, run again as __main__). Only the
    main process talks to systemd: no ``NOTIFY_SOCKET``; every child knows
    its service's main process (:data:`SERVICE_ENV`)."""
    isolated = ["-I"] if sys.flags.isolated else []
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env[SERVICE_ENV] = str(service_pid())
    return [sys.executable, *isolated, "-m", "ketter", "--config", config_path], env


class Children:
    """The extra processes of one service: one per item of ``args``, each
    ``ketter --config PATH`` + its arguments, inheriting its ``pass_fds``
    (``what`` names them in the log)."""

    def __init__(
        self,
        config: Config,
        args: list[list[str]],
        *,
        what: str = "workers",
        pass_fds: list[tuple[int, ...]] | None = None,
    ) -> None:
        if not config.path:
            raise ValueError(
                f"more than one {what} process needs a config file (the children read it)"
            )
        self.config = config
        self.args = args
        self.what = what
        #: For each child, the descriptors it inherits (its listening sockets).
        self.pass_fds = pass_fds or [() for _ in args]
        self.procs: list[subprocess.Popen[bytes]] = []
        #: A child exited without being asked to.
        self.failed = False

    def start(self) -> None:
        """Start the children; call before this process starts any thread."""
        argv, env = ketter_command(self.config.path)
        parent = os.getpid()
        # Each child inherits the stop and reload signals blocked until its
        # handlers are in (Shutdown.install): a SIGHUP passed on by
        # :meth:`reload` right after the start no longer kills it.
        before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_AND_RELOAD)
        try:
            for args, fds in zip(self.args, self.pass_fds, strict=True):
                self.procs.append(
                    subprocess.Popen(
                        [*argv, *args],
                        env=env,
                        start_new_session=True,
                        pass_fds=fds,
                        preexec_fn=functools.partial(die_with, parent),
                    )
                )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        log.info(
            f"{self.what} processes started",
            extra={"ketter.pids": [os.getpid(), *(p.pid for p in self.procs)]},
        )

    def watch(self, shutdown: Shutdown) -> threading.Thread:
        """A thread that stops this process when a child exits on its own,
        and asks every child to stop once this process is asked to."""
        thread = threading.Thread(
            target=self._watch, args=(shutdown,), name="ketter-children", daemon=True
        )
        with shutdown.spawn_threads_without_signals():
            thread.start()
        return thread

    def _watch(self, shutdown: Shutdown) -> None:
        while not shutdown.wait(0.5):
            gone = [p for p in self.procs if p.poll() is not None]
            if gone:
                self.failed = True
                log.error(
                    f"one of the {self.what} processes exited on its own; stopping the others",
                    extra={"ketter.pids": [p.pid for p in gone]},
                )
                shutdown.request()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def reload(self) -> None:
        """Pass a SIGHUP (re-read the config) on to every child."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGHUP)

    def stop(self, timeout: float) -> None:
        """Wait for the children (asked to stop by :meth:`watch`); SIGKILL
        what is left after ``timeout``."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.error(
                        f"one of the {self.what} processes did not stop in time",
                        extra={"ketter.pid": p.pid},
                    )
                    p.kill()
                    p.wait()
            if p.returncode not in (0, None):
                self.failed = True
