"""What the figures were measured on: CPU, RAM, disk, filesystem, versions."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any

from harness import fs_type


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def read_text(path: str) -> str:
    """A /proc or /sys file's text, stripped; "?" when unreadable."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _disk(device: str) -> dict[str, str]:
    name = os.path.basename(device)
    base = re.sub(r"p?\d+$", "", name) if not os.path.exists(f"/sys/block/{name}") else name
    sysdir = f"/sys/block/{base}"
    size = read_text(f"{sysdir}/size")
    return {
        "device": device,
        "model": read_text(f"{sysdir}/device/model")
        if os.path.exists(f"{sysdir}/device/model")
        else ("virtio block device" if base.startswith("vd") else "?"),
        "size_gib": f"{int(size) * 512 / 2**30:.0f}" if size.isdigit() else "?",
        "rotational": read_text(f"{sysdir}/queue/rotational"),
        "scheduler": read_text(f"{sysdir}/queue/scheduler"),
    }


def _ext4_features(device: str) -> str:
    if shutil.which("tune2fs") is None or os.geteuid() != 0:
        return "?"
    r = subprocess.run(["tune2fs", "-l", device], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("Filesystem features:"):
            return line.split(":", 1)[1].strip()
    return "?"


def _ext4_journal(device: str) -> str:
    """ "yes"/"no" from sysfs (no superblock access needed), else tune2fs."""
    task = read_text(f"/sys/fs/ext4/{os.path.basename(device)}/journal_task")
    if task != "?":
        return "no" if task == "<none>" else "yes"
    features = _ext4_features(device)
    return "?" if features == "?" else ("yes" if "has_journal" in features else "no")


def _mount_options(mountpoint: str) -> str:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[1] == mountpoint:
                return parts[3]
    return "?"


def describe(workdir: str, ketter: str) -> dict[str, Any]:
    fstype, device, mnt = fs_type(workdir)
    ext = fstype.startswith("ext")
    return {
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "ram_gib": round(_mem_total() / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "workdir": workdir,
        "fs": {
            "type": fstype,
            "mountpoint": mnt,
            "options": _mount_options(mnt),
            "journal": _ext4_journal(device) if ext else "?",
        },
        "disk": _disk(device),
        "tools": {
            "ketter": _first_line([ketter, "--version"]),
            "cp": _first_line(["cp", "--version"]),
            "tar": _first_line(["tar", "--version"]),
            "rsync": _first_line(["rsync", "--version"]),
            "rclone": _first_line(["rclone", "version"]),
            "openssl": _first_line(["openssl", "version"]),
        },
    }
