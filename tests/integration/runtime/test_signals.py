"""A stop signal is acted on whenever it lands (issue #15, section 2).

Under systemd about one graceful stop in fifty hung until SIGKILL: the
handler called ``threading.Event.set()``, and when the signal landed while
the main thread was inside the same event's ``wait()`` (holding its lock),
the handler waited for that lock for ever. The handler now only sets a plain
flag and writes to a pipe (:mod:`ketter.runtime.signals`).

The processes below run the loops of the services as they are: the main
thread turns like the workers' main loop (``shutdown.requested``, the reload
flag, ``shutdown.wait``) and a second thread waits like the children's
watcher and the watcher service (``shutdown.wait`` on another thread). The
main loop's waits return at once, so that most instants fall inside a wait
with its lock held: with the old handler, SIGTERM at a random instant hung
most of these processes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

LOOP = r"""
import sys, threading
from ketter.runtime.signals import Shutdown

shutdown = Shutdown().install()

def side():  # ketter.runtime.children.Children._watch, Watcher.run's waits
    while not shutdown.wait(0.0003):
        pass

with shutdown.spawn_threads_without_signals():
    thread = threading.Thread(target=side)
    thread.start()
print("ready", flush=True)
turns = reloads = 0
while not shutdown.requested:  # ketter.workers.consumer.WorkersProcess._loop
    if shutdown.reload.is_set():
        shutdown.reload.clear()
        reloads += 1
    # A wait that returns at once: the main thread is always running, mostly
    # inside the wait (the old Event.wait held its lock there), never
    # blocked where a signal would have found that lock free.
    shutdown.wait(0)
    turns += 1
thread.join(5)
print("stopped", turns, reloads, flush=True)
sys.exit(0 if not thread.is_alive() else 3)
"""

#: Processes, one SIGTERM each, at a random instant of its loop.
ROUNDS = 200
#: A clean stop takes milliseconds; this is only the bound of a hang.
STOP_DEADLINE = 10.0


def _start() -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", f"the loop did not start: {line!r} {proc.stderr.read()!r}"
    return proc


def _stop(proc: subprocess.Popen[str], rng: random.Random, seed: int, i: int) -> None:
    time.sleep(rng.uniform(0.0, 0.03))
    for _ in range(rng.randrange(3)):  # `systemctl reload` on the way
        proc.send_signal(signal.SIGHUP)
        time.sleep(rng.uniform(0.0, 0.005))
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(
            f"round {i} (seed {seed}): SIGTERM not acted on within {STOP_DEADLINE:g} s "
            "(the handler blocked: systemd would SIGKILL at TimeoutStopSec)"
        )
    assert proc.returncode == 0, f"round {i} (seed {seed}): exit {proc.returncode}: {err}"
    assert out.startswith("stopped "), out
    assert err == "", err


def test_sigterm_at_random_instants_always_stops_cleanly() -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    started = time.monotonic()
    for i in range(ROUNDS):
        _stop(_start(), rng, seed, i)
    took = time.monotonic() - started
    # Bounded: a clean stop takes milliseconds, each round well under a second.
    assert took < 60, f"{ROUNDS} stops took {took:.0f} s"



WORKERS_CONFIG = """\
state_dir: {root}/state
node: sig
shutdown_timeout: 5s
routes:
  - {{name: copy, source: {root}/src, destination: {root}/dst}}
"""

#: Starts of the real `ketter workers`, each stopped by one SIGTERM at a
#: random instant of its main loop (a start costs about a second).
SERVICE_ROUNDS = 20


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], count: int = 1) -> None:
    deadline = time.monotonic() + 60
    while log.read_text(encoding="utf-8").count(text) < count:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in: {log.read_text()}"
        time.sleep(0.02)


def test_the_workers_service_reloads_and_stops_at_random_instants(tmp_path: Path) -> None:
    for name in ("src", "dst", "state"):
        (tmp_path / name).mkdir()
    config = tmp_path / "ketter.yaml"
    config.write_text(WORKERS_CONFIG.format(root=tmp_path), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(ROOT)
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    for i in range(SERVICE_ROUNDS):
        log = tmp_path / f"workers-{i}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ketter", "--config", str(config), "workers", "-w", "1"],
                stdout=out, stderr=out, env=env,
            )
        _wait_for(log, '"workers started"', proc)
        if i == 0:  # `systemctl reload`: the loop re-reads the config
            proc.send_signal(signal.SIGHUP)
            _wait_for(log, '"config reloaded"', proc)
        time.sleep(rng.uniform(0.0, 0.5))  # the loop turns every 0.2 s
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_DEADLINE + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"round {i} (seed {seed}): SIGTERM not acted on: {log.read_text()}")
        text = log.read_text(encoding="utf-8")
        assert code == 0, f"round {i} (seed {seed}): exit {code}: {text}"
        assert '"workers stopped"' in text, text
        assert "Traceback" not in text, text
