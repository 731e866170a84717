"""``api.processes``: one ``ketter api`` serving its port from several
processes (a request is Python CPU under one interpreter lock; docs/api.md,
Serving). Real processes: the connections are spread over all of them, a
SIGTERM to the main one stops them all cleanly (one start and one stop in
the chain), a process that dies stops the API (systemd restarts the unit),
and a port another program holds is still refused at start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ketter.access.limiter import MAX_FAILURES
from tests.conftest import KETTER, cli_env
from tests.integration.api.process import ApiProcess, events, free_port, upgrade, write_config
from tests.integration.api.test_serve import ANSWERED, _get


def _lines(api: ApiProcess) -> list[dict]:
    return [json.loads(ln) for ln in api.stderr().splitlines() if ln.startswith("{")]


def _children(api: ApiProcess) -> list[int]:
    (started,) = [ln for ln in _lines(api) if ln["message"] == "api processes started"]
    pids = started["ketter.pids"]
    assert pids[0] == api.proc.pid
    return pids[1:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not serving.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _token(config: Path) -> str:
    return subprocess.run(
        [*KETTER, "--config", str(config), "token", "create", "probe", "--scopes",
         "metrics:read", "--routes", "*"],
        env=cli_env(), capture_output=True, text=True, timeout=120, check=True).stdout.strip()


def _serving_pids(api: ApiProcess, port: int, requests: int = 60) -> set[int]:
    """The processes that answered ``requests`` requests, each on a new
    connection (the kernel spreads connections, not requests)."""
    auth = {"Authorization": f"Bearer {_token(api.config)}"}
    for _ in range(requests):
        status, _ = _get(port, "/api/v1/health", headers=auth)
        assert status in ANSWERED - {401}
    # Each access line is written after its answer: wait for all of them.
    def lines() -> list[dict]:
        return [ln for ln in _lines(api) if ln.get("url.path") == "/api/v1/health"]

    _wait(lambda: len(lines()) >= requests, 30, "an access line per request")
    return {ln["process.pid"] for ln in lines()}


def test_processes_share_the_port_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}", "processes": 3})
    upgrade(config)
    with ApiProcess(config) as api:
        api.wait_serving()
        children = _children(api)
        assert len(children) == 2
        # 60 new connections: all three processes answer some (a process
        # left out by the kernel's hash has odds of (2/3)^60, about 1e-11).
        assert _serving_pids(api, port) == {api.proc.pid, *children}
        assert api.stop() == 0, api.stderr()
        for pid in children:
            _wait(lambda pid=pid: not _alive(pid), 30, f"api process {pid} still running")
    db = tmp_path / "state" / "ketter.db"
    # The main process records the start and the stop, once each.
    (started,) = events(db, "api_started")
    (stopped,) = events(db, "api_stopped")
    assert started["pid"] == stopped["pid"] == api.proc.pid


def test_a_process_that_dies_stops_the_api(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}", "processes": 2})
    upgrade(config)
    with ApiProcess(config) as api:
        api.wait_serving()
        (child,) = _children(api)
        os.kill(child, signal.SIGKILL)
        # Exit 1: systemd's Restart=on-failure starts the unit again whole.
        assert api.proc.wait(60) == 1, api.stderr()
    assert "one of the api processes exited on its own" in api.stderr(), api.stderr()
    with socket.socket() as probe:  # nothing left on the port
        probe.settimeout(5)
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert events(tmp_path / "state" / "ketter.db", "api_stopped")


def test_a_port_in_use_is_refused_with_several_processes(tmp_path: Path) -> None:
    # Another program listening with SO_REUSEPORT would share the port with
    # the API's sockets, and take some of its connections; it is refused.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}", "processes": 2})
        upgrade(config)
        done = subprocess.run([*KETTER, "--config", str(config), "api"], env=cli_env(),
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"api.listen: cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "api processes started" not in done.stderr


def test_failed_authentications_are_limited_across_the_processes(tmp_path: Path) -> None:
    # Each process allows its share of the failures: one address gets no
    # more 401s from all of them than from one process before the 429s.
    port = free_port()
    config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}", "processes": 2})
    upgrade(config)
    with ApiProcess(config) as api:
        api.wait_serving()
        codes = [
            _get(port, "/api/v1/transfers", headers={"Authorization": "Bearer kt_wrong"})[0]
            for _ in range(3 * MAX_FAILURES)
        ]
        assert api.stop() == 0, api.stderr()
    assert set(codes) == {401, 429}, codes
    assert codes.count(401) <= MAX_FAILURES, codes
    assert len(events(tmp_path / "state" / "ketter.db", "api_auth_failed")) == codes.count(401)
