"""Helpers for engine tests: trees with odd names, snapshots, tmpfs mounts."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from ketter.engine import TransferContext

ODD_NAMES = [
    b"plain.txt",
    b"with space.mov",
    b"new\nline",
    "caf\u00e9-nfc".encode(),
    "cafe\u0301-nfd".encode(),
    b"bad-\xff\xfe-utf8",
    b"L" * 255,
]


def write(path: bytes, data: bytes, mtime_ns: int | None = None, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def read(path: bytes) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def snapshot(root: bytes) -> dict[bytes, tuple[Any, ...]]:
    """relpath -> (kind, content or None, mode, mtime_ns) for a whole tree."""
    out: dict[bytes, tuple[Any, ...]] = {}
    st = os.lstat(root)
    if not os.path.isdir(root):
        with open(root, "rb") as f:
            return {b"": ("file", f.read(), st.st_mode & 0o7777, st.st_mtime_ns)}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            s = os.lstat(p)
            if os.path.isdir(p) and not os.path.islink(p):
                out[rel] = ("dir", None, s.st_mode & 0o7777, s.st_mtime_ns)
            elif os.path.islink(p):
                out[rel] = ("link", os.readlink(p), 0, 0)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), s.st_mode & 0o7777, s.st_mtime_ns)
    return out


def ketter_names(root: bytes) -> list[bytes]:
    """Every leftover temporary below ``root``."""
    found = []
    for dirpath, dirs, files in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirs + files if n.startswith(b".ketter-")]
    return found


class RecordingContext(TransferContext):
    """Records progress calls; runs an optional hook on progress/fault."""

    progress_interval = 0.0  # see every checkpoint: tests must be deterministic

    def __init__(self, *a: Any, on_progress: Any = None, on_fault: Any = None, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.calls: list[tuple[int, str]] = []
        self.on_progress = on_progress
        self.on_fault = on_fault
        self.faults: list[str] = []

    def progress(self, bytes_done: int, phase: str) -> None:
        self.calls.append((bytes_done, phase))
        if self.on_progress is not None:
            self.on_progress(bytes_done, phase)

    def fault(self, point: str) -> None:
        self.faults.append(point)
        if self.on_fault is not None:
            self.on_fault(point)


@contextlib.contextmanager
def tmpfs(path: bytes, size: str = "1m", extra: str = "") -> Iterator[bytes]:
    """Mount a tmpfs at ``path`` (root only); unmounted on exit."""
    import pytest

    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (f",{extra}" if extra else "")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)
