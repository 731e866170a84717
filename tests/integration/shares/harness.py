"""Real network shares for tests: Samba + smbnetfs, OpenSSH + sshfs (#15 §1).

The kernel here has no cifs/nfs client, but ``/dev/fuse`` works, so a share
is served by a real server bound to 127.0.0.1 and mounted by a real FUSE
client, as a studio's workstation mounts its NAS:

* **SMB**: ``smbd`` with its own ``smb.conf``, pid/lock/state/private dirs
  and passdb under the test's folder, on a free port (never 445); two
  shares ``zoneA``, ``zoneB``; ``smbnetfs`` mounts (one per zone, each its
  own FUSE filesystem and so its own ``st_dev``, plus one for "another
  host"). libsmbclient reads ``$HOME/.smb/smb.conf``: each smbnetfs runs
  with a HOME of ours, whose client config names the port.
* **SFTP**: ``sshd`` with its own host key, authorized keys and config on a
  free port; ``sshfs`` mounts of ``export/ssh/zoneA``, ``zoneB`` and of
  ``export/ssh`` (the other host).

Every process is started here with ``Popen`` and stopped by its pid (and
the pids of its children, read from ``/proc``), never by name; every mount
is unmounted at the end, also when the test failed. A missing tool fails
the test naming the Debian package (never a skip).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.ports import free_port

T = TypeVar("T")

#: tool → the Debian package that ships it (.ci/run installs them).
TOOLS = {
    "/usr/sbin/smbd": "samba",
    "/usr/bin/smbpasswd": "samba-common-bin",
    "/usr/bin/smbnetfs": "smbnetfs",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/bin/sshfs": "sshfs",
    "/usr/bin/fusermount3": "fuse3",
}
SMB_PASSWORD = "ketter-test-pw"


def require_tools() -> None:
    """Fail (not skip) naming the Debian package of each missing tool."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not os.access(tool, os.X_OK)})
    if missing:
        pytest.fail(
            "the share tests need the Debian packages "
            + " ".join(missing)
            + f": apt-get install {' '.join(missing)}"
        )
    if not os.path.exists("/dev/fuse"):
        pytest.fail("the share tests need /dev/fuse (FUSE): load the fuse module / run with it")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.1,
) -> T:
    """Poll ``predicate`` until truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (read from /proc), deepest last."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/stat", "rb") as fh:
            stat = fh.read()
            parent_of[int(entry)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def signal_tree(pid: int, sig: int) -> None:
    """``sig`` to ``pid`` and every descendant, by pid."""
    for p in [pid, *children(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """TERM (then KILL) a process we started and its children; reap it."""
    if proc.poll() is None:
        kids = children(proc.pid)
        signal_tree(proc.pid, signal.SIGCONT)  # a SIGSTOPped server must see TERM
        signal_tree(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_tree(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)


def mounted(point: Path) -> str | None:
    """The filesystem type mounted at ``point`` (from mountinfo), or None."""
    want = os.fsencode(point)
    fs = None
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            fields = line.split(b" ")
            if fields[4].replace(b"\\040", b" ") == want:
                tail = fields[fields.index(b"-", 6) + 1 :]
                fs = tail[0].decode()
    return fs


@dataclass
class Mount:
    """One FUSE mount served by a process we started."""

    point: Path
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def up(self, ready: Path | None = None) -> None:
        self.point.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
            )
        wait_for(lambda: mounted(self.point) or self._died(), 30, f"the mount {self.point}")
        if ready is not None:
            wait_for(lambda: ready.is_dir(), 30, f"{ready} on the mount")

    def _died(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.argv[0]} exited {self.proc.returncode} before mounting {self.point}: "
                + self.log.read_text(errors="replace")[-2000:]
            )

    def down(self) -> None:
        """Unmount (lazily if busy) and end the FUSE daemon by its pid."""
        self.unmount()
        self.reap()

    def unmount(self) -> None:
        if mounted(self.point):
            done = subprocess.run(
                ["fusermount3", "-u", str(self.point)], capture_output=True, timeout=30, check=False
            )
            if done.returncode != 0 and mounted(self.point):
                subprocess.run(
                    ["fusermount3", "-uz", str(self.point)],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )

    def reap(self, wait: float = 5.0) -> None:
        """The daemon exits by itself after the unmount (else it is ended)."""
        if self.proc is not None:
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
            self.proc = None


@dataclass
class Share:
    """One exported folder as Ketter sees it (``root`` under ``mount``), as
    another host sees it (``other``), and on the server's disk (``export``)."""

    protocol: str
    mount: Path
    root: Path
    other: Path
    export: Path

    @property
    def fs_type(self) -> str:
        return f"fuse.{'smbnetfs' if self.protocol == 'smb' else 'sshfs'}"


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    mounts: list[Mount] = field(default_factory=list)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        wait_for(lambda: listening(self.port) or self._died(), 30, f"{self.name} on {self.port}")

    def _died(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited {self.proc.returncode}: "
                + self.log.read_text(errors="replace")[-2000:]
            )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        wait_for(lambda: not listening(self.port), 30, f"{self.name} to stop listening")

    def pause(self) -> None:
        """SIGSTOP the server and its per-connection children: a hung NAS."""
        assert self.proc is not None
        signal_tree(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        signal_tree(self.proc.pid, signal.SIGCONT)


class Shares:
    """Both servers, their mounts, and the operations the scenarios need."""

    def __init__(self, base: Path, *, smb_free_pages: int | None = None) -> None:
        require_tools()
        self.base = base
        self.logs = base / "log"
        self.mnt = base / "mnt"
        self.export = base / "export"
        for d in (
            "log",
            "mnt",
            "export/smb/zoneA",
            "export/smb/zoneB",
            "export/ssh/zoneA",
            "export/ssh/zoneB",
        ):
            (base / d).mkdir(parents=True, exist_ok=True)
        self.smbd = self._smbd()
        self.sshd = self._sshd()
        # smbnetfs takes the port in the host's folder name (libsmbclient
        # parses smb://host:port/share); the client's "smb ports" is not used.
        host = self.smb_host = f"127.0.0.1:{self.smbd.port}"
        self.smb = {
            z: Share(
                "smb",
                self.mnt / f"smb{z}",
                self.mnt / f"smb{z}/{host}/zone{z}",
                self.mnt / f"smbOther/{host}/zone{z}",
                self.export / f"smb/zone{z}",
            )
            for z in "AB"
        }
        self.ssh = {
            z: Share(
                "ssh",
                self.mnt / f"ssh{z}",
                self.mnt / f"ssh{z}",
                self.mnt / f"sshOther/zone{z}",
                self.export / f"ssh/zone{z}",
            )
            for z in "AB"
        }
        self.smb_free_pages = smb_free_pages
        self.smbd.mounts = [self._smbnetfs(n) for n in ("smbA", "smbB", "smbOther")]
        self.sshd.mounts = [
            self._sshfs(self.export / "ssh/zoneA", "sshA"),
            self._sshfs(self.export / "ssh/zoneB", "sshB"),
            self._sshfs(self.export / "ssh", "sshOther"),
        ]

    # -- servers ----------------------------------------------------------

    def _smbd(self) -> Server:
        ns = self.base / "smbd"
        for d in ("run", "lock", "state", "cache", "private", "ncalrpc"):
            (ns / d).mkdir(parents=True, exist_ok=True)
        port = free_port()
        shares = "".join(
            f"[zone{z}]\n  path = {self.export}/smb/zone{z}\n  read only = no\n"
            "  valid users = root\n  create mask = 0644\n  directory mask = 0755\n"
            for z in "AB"
        )
        conf = ns / "smb.conf"
        conf.write_text(
            "[global]\n  netbios name = KETTERNAS\n  workgroup = WORKGROUP\n"
            "  server role = standalone server\n  interfaces = 127.0.0.1\n"
            f"  bind interfaces only = yes\n  smb ports = {port}\n  disable netbios = yes\n"
            "  server min protocol = SMB2_10\n"
            f"  pid directory = {ns}/run\n  lock directory = {ns}/lock\n"
            f"  state directory = {ns}/state\n  cache directory = {ns}/cache\n"
            f"  private dir = {ns}/private\n  ncalrpc dir = {ns}/ncalrpc\n"
            f"  passdb backend = tdbsam:{ns}/private/passdb.tdb\n"
            f"  log file = {self.logs}/smbd.%m\n  log level = 1\n  load printers = no\n"
            "  printing = bsd\n  printcap name = /dev/null\n  disable spoolss = yes\n"
            "  map to guest = Never\n" + shares
        )
        subprocess.run(
            ["smbpasswd", "-c", str(conf), "-s", "-a", "root"],
            input=f"{SMB_PASSWORD}\n{SMB_PASSWORD}\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
        return Server(
            "smbd",
            [
                "/usr/sbin/smbd",
                "--foreground",
                "--no-process-group",
                "--debug-stdout",
                "-s",
                str(conf),
            ],
            port,
            self.logs / "smbd.out",
        )

    def _sshd(self) -> Server:
        ns = self.base / "sshd"
        ns.mkdir(parents=True, exist_ok=True)
        for key in ("host_ed25519", "client_ed25519"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ns / key)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        shutil.copy(ns / "client_ed25519.pub", ns / "authorized_keys")
        port = free_port()
        (ns / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {ns}/host_ed25519\n"
            f"AuthorizedKeysFile {ns}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {ns}/sshd.pid\nSubsystem sftp internal-sftp\n"
            "LogLevel INFO\n"
        )
        # sshd's privilege-separation folder is compiled in (/run/sshd).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.ssh_key = ns / "client_ed25519"
        return Server(
            "sshd",
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(ns / "sshd_config")],
            port,
            self.logs / "sshd.out",
        )

    # -- mounts -----------------------------------------------------------

    def _smbnetfs(self, name: str) -> Mount:
        home = self.base / "smbclient" / name
        (home / ".smb").mkdir(parents=True, exist_ok=True)
        (home / ".smb" / "smb.conf").write_text(
            "[global]\n  workgroup = WORKGROUP\n  client min protocol = SMB2_10\n"
            "  client max protocol = SMB3\n  disable netbios = yes\n"
            "  name resolve order = host\n"
        )
        conf = home / ".smb" / "smbnetfs.conf"
        conf.write_text(
            "smb_query_browsers false\nuse_libsecret false\nshow_hidden_hosts true\n"
            "smb_timeout 20000\nmax_retry_count 2\n"
            f'auth "127.0.0.1" "root" "{SMB_PASSWORD}"\nhost 127.0.0.1 visible=true\n'
        )
        conf.chmod(0o600)
        opts = f"config={conf},smbnetfs_debug=0"
        if self.smb_free_pages is not None:
            opts += f",free_space_size={self.smb_free_pages}"
        env = {**os.environ, "HOME": str(home)}
        return Mount(
            self.mnt / name,
            ["smbnetfs", str(self.mnt / name), "-f", "-o", opts],
            env,
            self.logs / f"{name}.log",
        )

    def _sshfs(self, remote: Path, name: str) -> Mount:
        argv = [
            "sshfs",
            f"root@127.0.0.1:{remote}",
            str(self.mnt / name),
            "-f",
            "-p",
            str(self.sshd.port),
            "-o",
            f"IdentityFile={self.ssh_key}",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "reconnect",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ]
        return Mount(self.mnt / name, argv, dict(os.environ), self.logs / f"{name}.log")

    def _ready_dir(self, mount: Mount) -> Path | None:
        name = mount.point.name
        if name.startswith("smb"):
            zone = {"smbA": "zoneA", "smbB": "zoneB", "smbOther": "zoneA"}[name]
            return mount.point / self.smb_host / zone
        return None

    # -- lifecycle ----------------------------------------------------------

    def up(self) -> None:
        for server in (self.smbd, self.sshd):
            server.start()
            for m in server.mounts:
                m.up(self._ready_dir(m))

    def down(self) -> None:
        """Everything we started, unmounted and stopped; errors collected."""
        errors: list[BaseException] = []
        mounts = [m for server in (self.smbd, self.sshd) for m in server.mounts]
        # Every mount first, then the daemons (they exit in parallel), then
        # the servers: one daemon's slow exit does not add up per mount.
        for step in (Mount.unmount, Mount.reap):
            for m in mounts:
                try:
                    step(m)
                except BaseException as exc:  # go on: the rest must be stopped too
                    errors.append(exc)
        for server in (self.smbd, self.sshd):
            try:
                server.stop()
            except BaseException as exc:
                errors.append(exc)
        left = [m.point for s in (self.smbd, self.sshd) for m in s.mounts if mounted(m.point)]
        if left or errors:
            raise AssertionError(f"share harness teardown: mounts left {left}, errors {errors}")

    def server(self, protocol: str) -> Server:
        return self.smbd if protocol == "smb" else self.sshd

    def share(self, protocol: str, zone: str = "A") -> Share:
        return (self.smb if protocol == "smb" else self.ssh)[zone]

    def remount(self, protocol: str) -> None:
        """Unmount and mount again every client of ``protocol`` (a reboot of
        the workstation's share client): FUSE node ids start again."""
        server = self.server(protocol)
        for m in server.mounts:
            m.down()
        for m in server.mounts:
            m.up(self._ready_dir(m))

    def restart_server(self, protocol: str, down_seconds: float = 0.0) -> None:
        """Stop the server (its sessions end), wait, start it again on the
        same port; the clients reconnect by themselves."""
        server = self.server(protocol)
        server.stop()
        time.sleep(down_seconds)
        server.start()


@contextlib.contextmanager
def shares_up(base: Path, **kwargs: int | None) -> Iterator[Shares]:
    shares = Shares(base, **kwargs)
    try:
        shares.up()
        yield shares
    finally:
        shares.down()
