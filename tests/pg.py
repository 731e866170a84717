"""A throw-away PostgreSQL cluster for the tests (issue #18): ``initdb`` and
``pg_ctl`` under the test's temporary folder, as an unprivileged account
(PostgreSQL refuses to run as root; CI runs as root, so the data directory
is handed to ``nobody`` and the server runs under ``setpriv``), on a free
port of 127.0.0.1 with its own socket directory; stopped by its pid at the
end, also when a test fails. Never the machine's default cluster.

A missing PostgreSQL is a failure with a clear message, never a skip: CI
installs Debian's ``postgresql`` package (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

#: Where Debian's ``postgresql`` package puts the server binaries.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The unprivileged account the server runs as when the tests run as root.
ACCOUNT = "nobody"
#: Seconds the server may take to start or stop.
DEADLINE = 60.0


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed: install Debian's
    ``postgresql`` package (``apt-get install -y postgresql``; ``.ci/run``
    does)."""


def server_bin() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres`` (the newest
    installed major version), or :class:`PostgresMissing`."""
    found = sorted(
        (Path(p) for p in glob.glob(BIN_GLOB) if (Path(p) / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            raise PostgresMissing(PostgresMissing.__doc__)
        return Path(on_path).parent
    return found[-1]


@dataclass(frozen=True)
class Cluster:
    """A running throw-away cluster: connect to ``dsn(dbname)``."""

    datadir: Path
    port: int
    socket_dir: Path
    user: str
    pid: int
    host: str = "127.0.0.1"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"


def _as_account(uid: int, gid: int) -> list[str]:
    """The prefix that runs a command as the server's account (none when the
    tests already run unprivileged)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


@contextlib.contextmanager
def running_cluster(
    root: Path,
    *,
    durable: bool = False,
    settings: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    netns: str | None = None,
    listen: str | None = None,
) -> Iterator[Cluster]:
    """Start a cluster under ``root`` (created; must be new), yield it, stop
    it by its pid whatever happens. The tests' cluster skips ``fsync`` (its
    data is thrown away); ``durable`` keeps the server's defaults (a
    benchmark compares it with SQLite's fsynced commits:
    benchmarks/watcher_pg.py). ``settings``: more server settings (``-c
    name=value``). ``netns``: the server runs in that network namespace,
    listening on ``host`` there (a test that cuts the network to it), or on
    ``listen`` (``*``: every address of the namespace)."""
    binary = server_bin()
    if os.geteuid() == 0:
        account = pwd.getpwnam(ACCOUNT)
        uid, gid = account.pw_uid, account.pw_gid
    else:
        uid, gid = os.getuid(), os.getgid()
    prefix = _as_account(uid, gid)
    user = "ketter"
    root.mkdir(parents=True)
    datadir, socket_dir = root / "data", root / "sock"
    datadir.mkdir(mode=0o700)
    socket_dir.mkdir(mode=0o700)
    for path in (root, datadir, socket_dir):
        os.chown(path, uid, gid)
    if prefix:
        # The account must reach its folder: open the way down to it (search
        # only; the pytest temporary root is private to root).
        for parent in root.parents:
            if parent == Path("/") or parent.stat().st_mode & 0o001:
                continue
            os.chmod(parent, parent.stat().st_mode | 0o001)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"}
    subprocess.run(
        [
            *prefix,
            str(binary / "initdb"),
            "-D",
            str(datadir),
            "-U",
            user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=root,
    )
    if host != "127.0.0.1":
        # initdb trusts the loopback only: the peers on the namespace's link too.
        with open(datadir / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write("host all all samenet trust\n")
    port = free_port()
    options = (
        f"-c listen_addresses={listen or host} -c port={port} "
        f"-c unix_socket_directories={socket_dir} -c max_connections=200"
    )
    if not durable:
        options += " -c fsync=off -c full_page_writes=off"
    for name, value in (settings or {}).items():
        options += f" -c {name}={value}"
    log = root / "server.log"
    started = subprocess.run(
        [
            *(["ip", "netns", "exec", netns] if netns else []),
            *prefix,
            str(binary / "pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            options,
            "-l",
            str(log),
            "-w",
            "-t",
            str(int(DEADLINE)),
            "start",
        ],
        check=False,
        capture_output=True,
        env=env,
        cwd=root,
    )
    pid_file = datadir / "postmaster.pid"
    pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else 0
    try:
        if not pid or not _ready(host, port):
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            text += f"\npg_ctl: {started.stdout!r} {started.stderr!r}"
            raise RuntimeError(f"the test PostgreSQL cluster did not start:\n{text}")
        yield Cluster(datadir, port, socket_dir, user, pid, host)
    finally:
        if pid:
            _stop(pid)


def _ready(host: str, port: int) -> bool:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 1):
            return True
        time.sleep(0.05)
    return False


def _stop(pid: int) -> None:
    """Fast shutdown of the postmaster ``pid`` (SIGINT), SIGKILL past the deadline."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
