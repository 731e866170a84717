"""``KETTER_FAULT_STOP`` freezes the thread that reaches the fault point
before its next step (issue #15 review: it sent SIGSTOP to the process, the
kernel gave the stop to the main thread, and a job thread ran on: the next
step happened in 15 of 20 runs; crash tests that freeze a worker mid-copy
then saw a copy that went on)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import cli_env

#: A job thread reaches the fault point, then takes its next step (a write);
#: the main thread waits for it, as the workers' main loop does.
PROGRAM = r"""
import os, sys, threading
from ketter.runtime.faults import fault

def job():
    fault("mid-copy")
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, b"next step\n")
    os.close(fd)

t = threading.Thread(target=job)
t.start()
t.join()
"""

RUNS = 10


def _all_stopped(pid: int) -> bool:
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:  # a thread that ended
            continue
    return bool(states) and all(s == "T" for s in states)


def test_fault_stop_freezes_the_calling_thread_before_its_next_step(tmp_path: Path) -> None:
    env = cli_env(KETTER_FAULT_STOP="mid-copy")
    for run in range(RUNS):
        marker = tmp_path / f"step-{run}"
        proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(marker)], env=env)
        try:
            deadline = time.monotonic() + 60
            while not _all_stopped(proc.pid):
                assert proc.poll() is None, f"run {run}: exited {proc.returncode} unstopped"
                assert time.monotonic() < deadline, f"run {run}: not stopped after 60 s"
                time.sleep(0.01)
            # Every thread stopped: the job thread's next step must not have run.
            assert not marker.exists(), f"run {run}: the step after the fault point ran"
            os.kill(proc.pid, signal.SIGCONT)
            assert proc.wait(60) == 0
            assert marker.read_bytes() == b"next step\n"  # it goes on once continued
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
