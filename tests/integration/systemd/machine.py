"""A throwaway Debian booted with systemd as PID 1 (``systemd-nspawn -b``).

The harness of tests/integration/systemd/test_boot.py:

* :func:`preflight` says exactly why this machine cannot boot one (not
  root, a missing Debian package, no Debian suite to bootstrap) - the test
  fails with that reason, it never skips;
* :func:`base_root` debootstraps a minimal Debian of the host's suite through
  the mirror apt is configured with (and apt's HTTP proxy), once: the root
  is cached under the checkout's git-ignored ``var/systemd-test/`` and
  copied for each run;
* :func:`build_release` builds the release tarball as docs/operations.md
  ("Install", "Offline") does: ``make wheelhouse``, then deploy/ configs/
  docs/ dist/wheelhouse;
* :class:`Machine` boots a root, runs commands inside it (``nsenter`` into
  the container's namespaces), and powers it off through its systemd.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / "var" / "systemd-test"
#: Host tools and the Debian package that provides each.
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "pgrep": "procps",
    "make": "make",
}
#: What the container needs besides minbase: systemd as PID 1, a Python with
#: venv for deploy/install.sh, and the tools the checks call.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "procps",
    "iproute2",
    "util-linux",
)
#: Bump when the cached root's preparation changes.
ROOT_FORMAT = 1
MACHINE_NAME = "ketter-boot-test"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CannotBoot(Exception):
    """This machine cannot boot the container; the message says why."""


def preflight() -> None:
    """Raise :class:`CannotBoot` naming what is missing."""
    if os.geteuid() != 0:
        raise CannotBoot("needs root: debootstrap and systemd-nspawn run as root")
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise CannotBoot(f"missing host tools: apt-get install {' '.join(missing)}")
    if not Path("/sys/fs/cgroup").is_dir():
        raise CannotBoot("no /sys/fs/cgroup: systemd inside the container needs a cgroup tree")


def host_suite() -> str:
    """The Debian suite of this machine (``VERSION_CODENAME`` of os-release)."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError as exc:
        raise CannotBoot(f"cannot read /etc/os-release: {exc}") from exc
    fields = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', text, re.M))
    if fields.get("ID") != "debian" and "debian" not in fields.get("ID_LIKE", ""):
        raise CannotBoot(f"the host is {fields.get('ID')!r}, not Debian: no suite to bootstrap")
    suite = fields.get("VERSION_CODENAME", "")
    if not suite:
        raise CannotBoot("/etc/os-release names no VERSION_CODENAME")
    return suite


def host_mirror() -> str:
    """The Debian mirror apt is configured with (deb822 ``URIs:`` or one-line
    ``deb URL``), not the security archive."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if not (line.startswith("URIs:") or line.startswith("deb ")):
                continue
            for url in re.findall(r"https?://\S+", line):
                if "security" not in url and "debian" in url:
                    return url.rstrip("/")
    raise CannotBoot("apt names no Debian mirror in /etc/apt/sources.list{,.d/}")


def apt_proxy_env() -> dict[str, str]:
    """``http_proxy`` for debootstrap when apt goes through one."""
    out = subprocess.run(
        ["apt-config", "shell", "P", "Acquire::http::Proxy"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    match = re.search(r"P='([^']+)'", out)
    return {"http_proxy": match.group(1)} if match else {}


def base_root(log: Path) -> Path:
    """The cached minimal Debian root, debootstrapped on first use."""
    suite, mirror = host_suite(), host_mirror()
    key = hashlib.sha256(f"{ROOT_FORMAT} {suite} {mirror} {' '.join(PACKAGES)}".encode())
    cached = CACHE / f"{suite}-{key.hexdigest()[:12]}"
    if (cached / "complete").exists():
        return cached / "root"
    shutil.rmtree(cached, ignore_errors=True)
    cached.mkdir(parents=True)
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    if keyring.exists():
        cmd.append(f"--keyring={keyring}")
    cmd += [suite, str(cached / "root"), mirror]
    with log.open("w") as out:
        result = subprocess.run(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1200,
            env={**os.environ, **apt_proxy_env()},
        )
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(True)[-15:])
        shutil.rmtree(cached, ignore_errors=True)
        raise CannotBoot(
            f"debootstrap {suite} from {mirror} failed (exit {result.returncode}, {log}):\n{tail}"
        )
    root = cached / "root"
    # A fresh machine id at each first boot; no package caches in the copies.
    (root / "etc" / "machine-id").write_text("")
    (root / "etc" / "hostname").write_text(MACHINE_NAME + "\n")
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    (cached / "complete").write_text(" ".join(cmd) + "\n")
    return root


def copy_root(base: Path, dest: Path) -> None:
    """A private copy of the cached root for one run."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(dest)], check=True, timeout=600)


def remove_root(root: Path) -> None:
    if root.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], timeout=600)


def build_release(work: Path, log: Path) -> Path:
    """``make wheelhouse`` with this interpreter's venv, then the release
    tarball of docs/operations.md: deploy/ configs/ docs/ dist/wheelhouse."""
    wheelhouse = work / "wheelhouse"
    venv = Path(sys.prefix)
    # `make wheelhouse` depends on `make install`, which would (re)install
    # the checkout into the venv: -o names it done, the venv is the test's.
    cmd = [
        "make",
        "-C",
        str(REPO),
        "-o",
        f"{venv}/.installed",
        "wheelhouse",
        f"VENV={venv}",
        f"WHEELHOUSE={wheelhouse}",
    ]
    with log.open("w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    if result.returncode != 0 or not list(wheelhouse.glob("ketter-*.whl")):
        raise AssertionError(f"make wheelhouse failed ({log}):\n{log.read_text()[-3000:]}")
    tarball = work / "ketter-release.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in ("deploy", "configs", "docs"):
            tar.add(REPO / name, arcname=name)
        tar.add(wheelhouse, arcname="dist/wheelhouse")
    return tarball


def check_wheels_fit(root: Path, wheelhouse: Path) -> None:
    """Compiled wheels must match the container's Python (the host's suite)."""
    out = subprocess.run(
        ["chroot", str(root), "python3", "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    version = out.stdout.strip()
    for wheel in wheelhouse.glob("*-cp3*-*.whl"):
        if f"-cp{version}-" not in wheel.name and "-abi3-" not in wheel.name:
            raise CannotBoot(
                f"{wheel.name} does not fit the container's Python "
                f"{version[0]}.{version[1:]}: the wheelhouse is built by the test "
                f"interpreter {sys.version.split()[0]}"
            )


class Machine:
    """One ``systemd-nspawn -b`` container on ``root``."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.root = root
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.options = [
            "-D",
            str(root),
            "-b",
            "-M",
            MACHINE_NAME,
            "--private-network",
            "--console=pipe",
        ]
        if not Path("/run/systemd/system").is_dir():
            # The host's PID 1 is not systemd: no machined to register with,
            # no transient scope to move into.
            self.options += ["--register=no", "--keep-unit"]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def boot(self, log_name: str) -> str:
        """Boot and wait for ``is-system-running``; returns its state."""
        log = (self.logs / log_name).open("wb")
        self.process = subprocess.Popen(
            ["systemd-nspawn", *self.options],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 90
        while not self.leader:
            if not self.running():
                raise CannotBoot(
                    f"systemd-nspawn {' '.join(self.options)} exited:\n"
                    + (self.logs / log_name).read_text()[-3000:]
                )
            if time.monotonic() > deadline:
                raise CannotBoot(
                    "no systemd inside the container after 90 s:\n"
                    + (self.logs / log_name).read_text()[-3000:]
                )
            self.leader = self._find_leader()
            time.sleep(0.5)
        state = ""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = self.run("systemctl is-system-running", timeout=30).stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(1)
        raise CannotBoot(
            f"the container's systemd did not finish booting in 180 s "
            f"(state {state!r}):\n"
            + self.run(
                "systemctl --failed --no-pager; systemctl list-jobs --no-pager", timeout=30
            ).stdout
        )

    def _find_leader(self) -> int:
        assert self.process is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        for pid in out.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return 0

    def run(
        self, command: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A bash command line inside the container, clean environment."""
        variables = {
            "PATH": PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            **(env or {}),
        }
        return subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.leader),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "-C",
                "--",
                "env",
                "-i",
                *(f"{k}={v}" for k, v in variables.items()),
                "/bin/bash",
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            errors="replace",
        )

    def poweroff(self, timeout: float = 120) -> bool:
        """``systemctl poweroff`` inside; True when the container stopped by
        itself, else it is terminated (and False)."""
        if not self.running():
            return True
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run("systemctl poweroff", timeout=30)
        clean = True
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            clean = False
            self.process.send_signal(signal.SIGTERM)  # nspawn: poweroff the container
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self.process = None
        self.leader = 0
        # nspawn cannot remove this itself when the host's /run is no tmpfs.
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{MACHINE_NAME}", ignore_errors=True)
        return clean
