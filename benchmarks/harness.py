"""The machine side of ``make bench``: timed child processes, cold caches,
warm memory, peers, and the folders that must not outlive the run.

Read ../shared/BENCHMARKING.md for why each step is here: on these VMs a
benchmark that skips them measures the balloon driver and ext4's inode
allocator, not the tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import ClassVar

DROP_CACHES = "/proc/sys/vm/drop_caches"


@dataclass
class Timed:
    """One timed child process."""

    seconds: float
    returncode: int
    maxrss_kb: int
    stdout: str
    stderr: str


GNU_TIME = "/usr/bin/time"


def run_timed(argv: list[str], *, env: dict[str, str] | None = None) -> Timed:
    """Run ``argv`` and time it from spawn to reap.

    The peak RSS comes from GNU time (``%M``, a ``wait4`` in a small
    process): a child forked straight from this Python process would
    inherit its high-water mark, and ``RUSAGE_CHILDREN`` is the maximum over
    every child so far. Output goes to unlinked files, not pipes: nothing
    to drain while timing.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name, *argv]
        use_time = os.access(GNU_TIME, os.X_OK)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            wrapped if use_time else argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        maxrss = int(usage.ru_maxrss)  # an upper bound (see above) without GNU time
        if use_time:
            lines = rss.read().split()
            if lines and lines[-1].isdigit():
                maxrss = int(lines[-1])
        out.seek(0)
        err.seek(0)
        return Timed(
            seconds,
            proc.returncode,
            maxrss,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access(DROP_CACHES, os.W_OK)


def drop_caches(level: int = 3) -> None:
    """``sync; echo LEVEL > drop_caches``: 3 evicts file data (cold source)
    and the dentry/inode caches (which also ends ext4's slow search around
    recently deleted inodes, BENCHMARKING.md #3)."""
    os.sync()
    with open(DROP_CACHES, "w") as f:
        f.write(f"{level}\n")


_TOUCH = """
import mmap, sys
populate = getattr(mmap, "MAP_POPULATE", 0x8000)
held = [mmap.mmap(-1, 1 << 28, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
        for _ in range(int(sys.argv[1]) >> 28)]
"""


def touch_memory(nbytes: int) -> None:
    """Fault in ``nbytes`` of anonymous memory and free it again.

    Pages free for a few seconds go back to the host (memory ballooning)
    and cost about 1 s/GiB to get back; paying that here, untimed, right
    before the run keeps it out of the figures (BENCHMARKING.md #2). In a
    child process, so this one keeps a small RSS high-water mark.
    """
    subprocess.run([sys.executable, "-c", _TOUCH, str(nbytes)], check=True)


def fs_type(path: str) -> tuple[str, str, str]:
    """(fstype, device, mount point) of ``path`` from /proc/self/mountinfo."""
    path = os.path.realpath(path)
    best = ("?", "?", "/")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4].encode().decode("unicode_escape")
            fstype, device = right.split()[:2]
            inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[2]):
                best = (fstype, device, mnt)
    return best


def tree_size(path: str, ignore: tuple[str, ...] = ()) -> tuple[int, int]:
    """(files, bytes) below ``path`` (or of the file itself), skipping the
    top-level entries named in ``ignore``; lstat only."""
    if os.path.isfile(path):
        return 1, os.lstat(path).st_size
    files = size = 0
    for dirpath, dirs, names in os.walk(path):
        if dirpath == path:
            dirs[:] = [d for d in dirs if d not in ignore]
        for n in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, n)).st_size
    return files, size


@dataclass
class Peers:
    """Which external tools exist; installs missing ones with apt, once."""

    missing: dict[str, str] = field(default_factory=dict)
    _tried_apt: bool = False

    APT: ClassVar[dict[str, str]] = {
        "rsync": "rsync",
        "rclone": "rclone",
        "openssl": "openssl",
        "tar": "tar",
    }

    def ensure(self, tools: list[str]) -> None:
        absent = [t for t in tools if shutil.which(t) is None and t not in self.missing]
        if not absent:
            return
        packages = [self.APT[t] for t in absent if t in self.APT]
        if packages and not self._tried_apt:
            self._tried_apt = True
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                why = "not root" if os.geteuid() != 0 else "no apt-get"
                print(f"  missing {', '.join(absent)}; cannot install ({why})")
            else:
                print(f"  installing {' '.join(packages)} with apt-get (once) …", flush=True)
                for cmd in (
                    ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", *packages],
                ):
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        print(f"  {' '.join(cmd[:2])} failed: {r.stderr.strip()[-300:]}")
                        break
        for t in absent:
            if shutil.which(t) is None:
                self.missing[t] = (
                    f"{t} is not installed and apt-get could not install it"
                    if self._tried_apt
                    else f"{t} is not installed"
                )

    def skipped(self, needs: tuple[str, ...]) -> str | None:
        for t in needs:
            if t in self.missing:
                return self.missing[t]
        return None


def rmtree(path: str) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def say(msg: str = "") -> None:
    print(msg, flush=True)
    sys.stdout.flush()
