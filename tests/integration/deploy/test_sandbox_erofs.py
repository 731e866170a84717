"""A route folder the sandbox makes read-only pauses the route, with the fix
in its reason (issue #15, section 2).

Under the units every folder outside ``ReadWritePaths=`` is a read-only bind
mount of a writable filesystem (``ProtectSystem=strict``); a destination
folder created after the service started is one of them, and every write
there fails with EROFS. That used to fail the job for good while ``health``
stayed healthy. Here a real process sets up the same mount shape in a
private mount namespace (``unshare``, as systemd does for a service) and
hits EROFS for real; a filesystem mounted read-only is the other cause,
told apart by the mount table. The decision (a route pause for
``retry.max_delay``, attempt given back) is in tests/unit/jobs/test_policy.py
("route-not-writable-*"); a paused route fails ``health``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[3]

PROGRAM = r"""
import json, os, subprocess, sys
from ketter.engine.oserrors import classify_oserror, read_only_reason

base = sys.argv[1]
sandboxed, ro_fs = os.path.join(base, "mnt", "qc"), os.path.join(base, "ro")
# ProtectSystem=strict: a read-only bind mount over a writable filesystem.
subprocess.run(["mount", "--bind", sandboxed, sandboxed], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", sandboxed], check=True)
# A filesystem mounted read-only.
subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro_fs], check=True)
out = {}
for name, folder in (("sandbox", sandboxed), ("mount", ro_fs)):
    path = os.path.join(folder, "inbox late").encode()
    try:
        os.mkdir(path)  # what the workers do first on a new destination folder
    except OSError as exc:
        error = classify_oserror(exc, path, "create the destination folder")
        out[name] = [type(error).__name__, error.message]
# What the sweep's look at the paused route can ask, without writing.
out["looks"] = [read_only_reason(p.encode()) for p in (sandboxed, ro_fs, base)]
# The route's look (the sweep's and the policy's): a read-only destination, or
# the source of a move route, is a reason; a copy route's read-only source is not.
from ketter.config import parse_config
from ketter.jobs.routes import unavailable_reason
src, dst = os.path.join(base, "wsrc"), os.path.join(base, "wdst")  # writable
routes = {"to-sandbox": (src, sandboxed, "copy"), "from-ro-copy": (ro_fs, dst, "copy"),
          "from-ro-move": (ro_fs, dst, "move")}
out["routes"] = {}
for n, (s, d, m) in routes.items():  # one config each: two routes may not share a source
    route = f"{{name: {n}, source: {s}, destination: {d}, mode: {m}}}"
    text = f"state_dir: {base}/state\nroutes:\n  - {route}\n"
    out["routes"][n] = unavailable_reason(parse_config(text).route(n))
print(json.dumps(out))
"""


def test_erofs_under_the_sandbox_says_re_render_the_units(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare is missing: install the Debian package util-linux"
    assert os.geteuid() == 0, "needs root (a private mount namespace)"
    (tmp_path / "mnt" / "qc").mkdir(parents=True)
    (tmp_path / "ro").mkdir()
    (tmp_path / "wsrc").mkdir()
    (tmp_path / "wdst").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [unshare, "--mount", "--propagation", "private", sys.executable, "-c", PROGRAM,
         str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    kind, message = out["sandbox"]
    assert kind == "RouteNotWritable"
    assert "inbox late" in message
    assert "not writable under the unit's sandbox: re-render the units" in message
    kind, message = out["mount"]
    assert kind == "RouteNotWritable"
    assert "read-only filesystem (EROFS): remount it read-write" in message
    assert "unit's sandbox" not in message
    sandbox_look, mount_look, writable_look = out["looks"]
    assert sandbox_look.startswith("not writable under the unit's sandbox")
    assert mount_look.startswith("read-only filesystem")
    assert writable_look is None
    routes = out["routes"]
    assert routes["to-sandbox"].startswith(f"destination {tmp_path}/mnt/qc: not writable under")
    assert routes["from-ro-copy"] is None
    assert routes["from-ro-move"].startswith(f"source {tmp_path}/ro: read-only filesystem")
    # Nothing leaked out of the private namespace.
    assert not os.path.ismount(tmp_path / "ro")


MOUNTINFO = (
    "22 1 8:1 / / ro,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "30 22 8:1 /srv/in\\040box /mnt/qc/in\\040box rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "31 22 0:40 / /mnt/cd ro,relatime shared:2 - iso9660 /dev/sr0 ro\n"
)


def test_read_only_reason_from_the_mount_table(tmp_path: Path) -> None:
    from ketter.engine.oserrors import MOUNT_REASON, SANDBOX_REASON, read_only_reason

    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO, encoding="utf-8")
    look = lambda p: read_only_reason(p, str(table))  # noqa: E731
    assert look(b"/mnt/qc/late") == SANDBOX_REASON  # under "/": ro bind of an rw ext4
    assert look(b"/mnt/qc/in box/ep1") is None  # in ReadWritePaths= (escaped space)
    assert look(b"/mnt/qc/in boxer") == SANDBOX_REASON  # a sibling, not inside it
    assert look(b"/mnt/cd/x") == MOUNT_REASON
    assert read_only_reason(b"/x", str(tmp_path / "missing")) is None


LATE_FOLDER = r"""
set -u
T=$1; shift
# The unit's view: the destination, missing at the start, is read-only.
mount --bind "$T/dst" "$T/dst" && mount -o remount,bind,ro "$T/dst"
"$@" --config "$T/ketter.yaml" workers -w 1 > "$T/workers-sandboxed.log" 2>&1 &
W=$!
"$@" --config "$T/ketter.yaml" enqueue "$T/src/take.wav" --route copy > /dev/null
for i in $(seq 1 300); do
  "$@" --config "$T/ketter.yaml" health > "$T/health.txt" 2>&1; rc=$?
  grep -q "unit's sandbox" "$T/health.txt" && break
  sleep 0.1
done
echo "$rc" > "$T/health.rc"
"$@" --config "$T/ketter.yaml" jobs --json > "$T/jobs.json"
kill -TERM $W; wait $W; echo $? > "$T/workers.rc"
"""

LATE_CONFIG = """\
state_dir: {root}/state
node: late
shutdown_timeout: 5s
lease: {{ttl: 10s, heartbeat: 0.5s, sweep_interval: 0.5s}}
retry: {{max_attempts: 2, base_delay: 1s, max_delay: 2s}}
health: {{heartbeat_stale: 30s, min_free: 1}}
routes:
  - {{name: copy, source: {root}/src, destination: {root}/dst}}
"""


def test_a_late_route_folder_pauses_the_route_fails_health_then_delivers(
    tmp_path: Path,
) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare is missing: install the Debian package util-linux"
    for name in ("src", "dst", "state"):
        (tmp_path / name).mkdir()
    (tmp_path / "ketter.yaml").write_text(LATE_CONFIG.format(root=tmp_path), encoding="utf-8")
    data = os.urandom(100_000)
    (tmp_path / "src" / "take.wav").write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(ROOT)
    ketter = [sys.executable, "-m", "ketter"]
    subprocess.run(
        [unshare, "--mount", "--propagation", "private", "bash", "-c", LATE_FOLDER, "late",
         str(tmp_path), *ketter],
        env=env, timeout=120, check=True,
    )
    health = (tmp_path / "health.txt").read_text()
    assert (tmp_path / "health.rc").read_text().strip() == "1", health
    assert "FAIL  route copy: paused" in health, health
    assert "not writable under the unit's sandbox: re-render the units" in health
    assert (tmp_path / "workers.rc").read_text().strip() == "0"
    (job,) = json.loads((tmp_path / "jobs.json").read_text())
    # Waiting, its attempt given back (it used to be `failed` for good).
    assert job["state"] == "retry_wait", job
    assert job["attempt"] == 0, job
    assert not list((tmp_path / "dst").iterdir())

    # The units re-rendered and the service restarted: a writable view.
    with (tmp_path / "workers.log").open("wb") as out:
        workers = subprocess.Popen([*ketter, "--config", str(tmp_path / "ketter.yaml"),
                                    "workers", "-w", "1"], stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "dst" / "take.wav").exists():
            assert workers.poll() is None, (tmp_path / "workers.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "workers.log").read_text()
            time.sleep(0.1)
    finally:
        workers.send_signal(signal.SIGTERM)
        assert workers.wait(60) == 0
    assert (tmp_path / "dst" / "take.wav").read_bytes() == data


STAYS_PAUSED = r"""
set -u
T=$1; shift
mount --bind "$T/dst" "$T/dst" && mount -o remount,bind,ro "$T/dst"
"$@" --config "$T/ketter.yaml" workers -w 1 > "$T/workers.log" 2>&1 &
W=$!
"$@" --config "$T/ketter.yaml" enqueue "$T/src/take.wav" --route copy > /dev/null
for i in $(seq 1 600); do
  "$@" --config "$T/ketter.yaml" health > "$T/health.txt" 2>&1
  grep -q "unit's sandbox" "$T/health.txt" && break
  sleep 0.1
done
# Read-only through several retry.max_delay (1 s) and sweeps (0.5 s).
sleep 5
mount -o remount,bind,rw "$T/dst"
for i in $(seq 1 600); do [ -e "$T/dst/take.wav" ] && break; sleep 0.1; done
kill -TERM $W; wait $W; echo $? > "$T/workers.rc"
"""


def test_a_read_only_route_stays_paused_without_new_alerts_and_resumes_once_writable(
    tmp_path: Path,
) -> None:
    """The sweep's look at the paused route sees the read-only mount
    (``unavailable_reason``): no resume (and no new pause, event and alert)
    every ``retry.max_delay`` while it stays read-only, and it resumes at
    the next sweep once it is writable."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare is missing: install the Debian package util-linux"
    for name in ("src", "dst", "state"):
        (tmp_path / name).mkdir()
    config = LATE_CONFIG.format(root=tmp_path).replace("max_delay: 2s", "max_delay: 1s")
    (tmp_path / "ketter.yaml").write_text(config, encoding="utf-8")
    data = os.urandom(100_000)
    (tmp_path / "src" / "take.wav").write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run(
        [unshare, "--mount", "--propagation", "private", "bash", "-c", STAYS_PAUSED, "paused",
         str(tmp_path), sys.executable, "-m", "ketter"],
        env=env, timeout=180, check=True,
    )
    log = (tmp_path / "workers.log").read_text()
    assert "not writable under the unit's sandbox" in (tmp_path / "health.txt").read_text()
    assert (tmp_path / "workers.rc").read_text().strip() == "0", log
    assert (tmp_path / "dst" / "take.wav").read_bytes() == data, log
    con = sqlite3.connect(f"file:{tmp_path}/state/ketter.db?mode=ro", uri=True)
    try:
        events = [e for (e,) in con.execute(
            "SELECT event FROM events WHERE event IN ('route_paused', 'route_resumed') "
            "ORDER BY id")]
    finally:
        con.close()
    # One pause (one alert) for the whole read-only spell, one resume.
    assert events == ["route_paused", "route_resumed"], log
