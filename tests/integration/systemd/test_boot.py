"""Ketter's units under a real systemd as PID 1 (issue #15, section 2).

One boot of a minimal Debian of the host's suite (``systemd-nspawn -b``,
``--private-network``: the install needs no network), many checks, then a
poweroff and a second boot. Inside, Ketter is installed offline exactly as
docs/operations.md says (the release tarball from ``make wheelhouse``,
``deploy/install.sh --wheelhouse``), the units are rendered for a copy route
and a move route between three tmpfs "shares", and checks.sh (next to this
file) checks: Type=notify readiness, the watchdog, deliveries, ``health``,
``systemctl reload``, a stop during a transfer (clean, within
TimeoutStopSec, resumed after), SIGKILL and the automatic restart, no SIGSYS
with the system call filter in kill mode, LoadCredential= of the HMAC key,
RestartPreventExitStatus=2 on a broken config, a route folder that appears
after the start, ketter.target's behaviour, the journal's priorities and
identifiers, ``systemd-analyze security`` (at most 2.0 per unit), start at
boot, clean stop at poweroff and ``install.sh --uninstall``.

The Debian root is debootstrapped once and cached under the checkout's
``var/systemd-test/`` (git-ignored): delete it to start cold. A machine that
cannot boot the container fails the test with the reason (never a skip).
The logs of a run (checks' output, journals, the rendered units, the
security reports) stay in the test's temporary folder, ``logs/``.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.systemd.machine import (
    CannotBoot,
    Machine,
    base_root,
    build_release,
    check_wheels_fit,
    copy_root,
    preflight,
    remove_root,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]

HERE = Path(__file__).resolve().parent
#: Big enough that a stop and a kill land mid-transfer (a quarter is seen
#: first); the three shares are tmpfs of twice this plus 1 GiB each.
BIG_MB = 1024
FSTAB = """
# Ketter systemd test: three zone "shares" (tmpfs stand-ins for SMB/NFS mounts)
tmpfs /mnt/ingest tmpfs size={mb}M,mode=0755 0 0
tmpfs /mnt/dub    tmpfs size={mb}M,mode=0755 0 0
tmpfs /mnt/qc     tmpfs size={mb}M,mode=0755 0 0
"""


def _prepare(tmp_path: Path) -> tuple[Path, Path, float]:
    """The run's root (a copy of the cached one, the release unpacked in
    /root/ketter-release, the shares in fstab), the logs folder, and the
    seconds spent on debootstrap (0 when cached)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    preflight()
    t0 = time.monotonic()
    base = base_root(logs / "debootstrap.txt")
    bootstrap = time.monotonic() - t0
    tarball = build_release(tmp_path, logs / "wheelhouse.txt")
    check_wheels_fit(base, tmp_path / "wheelhouse")
    root = tmp_path / "root"
    copy_root(base, root)
    for share in ("ingest", "dub", "qc"):
        (root / "mnt" / share).mkdir(parents=True)
    with (root / "etc" / "fstab").open("a") as fstab:
        fstab.write(FSTAB.format(mb=2 * BIG_MB + 1024))
    release = root / "root" / "ketter-release"
    release.mkdir(parents=True)
    shutil.unpack_archive(tarball, release)
    shutil.copy(HERE / "checks.sh", root / "root" / "checks.sh")
    (root / "root" / "checks.sh").chmod(0o755)
    return root, logs, bootstrap


def _phase(machine: Machine, logs: Path, phase: str) -> list[str]:
    """Run one phase of checks.sh inside; its lines, also in logs/."""
    done = machine.run(f"/root/checks.sh {phase}", timeout=900, env={"BIG_MB": str(BIG_MB)})
    text = done.stdout + (f"\n[stderr]\n{done.stderr}" if done.stderr.strip() else "")
    (logs / f"checks-{phase}.txt").write_text(text)
    print(text)
    lines = done.stdout.splitlines()
    if not any(line.startswith(f"RESULT {phase}:") for line in lines):
        lines.append(
            f"FAIL checks.sh {phase} did not finish (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}"
        )
    return lines


def test_units_under_systemd_as_pid_1(tmp_path: Path) -> None:
    started = time.monotonic()
    root = tmp_path / "root"
    machine: Machine | None = None
    try:
        try:
            root, logs, bootstrap = _prepare(tmp_path)
            machine = Machine(root, logs)
            state = machine.boot("nspawn-boot1.txt")
        except CannotBoot as exc:
            pytest.fail(f"this machine cannot boot a systemd container: {exc}", pytrace=False)
        version = machine.run("systemctl --version | head -1; systemd-detect-virt").stdout
        lines = [f"INFO booted ({state}): {' / '.join(version.split(chr(10))[:2])}"]
        lines += _phase(machine, logs, "install")
        machine.run(
            "journalctl --no-pager -o short-precise -b > /root/ketter-test-logs/journal-boot1.txt"
        )
        if not machine.poweroff():
            lines.append("FAIL the container did not power off within 120 s")
        try:
            machine.boot("nspawn-boot2.txt")
        except CannotBoot as exc:
            lines.append(f"FAIL second boot: {exc}")
        else:
            lines += _phase(machine, logs, "after-reboot")
            machine.run(
                "journalctl --no-pager -o short-precise > /root/ketter-test-logs/journal.txt"
            )
            if not machine.poweroff():
                lines.append("FAIL the container did not power off within 120 s (second boot)")
        shutil.copytree(root / "root" / "ketter-test-logs", logs / "inside", dirs_exist_ok=True)
    finally:
        if machine is not None and machine.running():
            machine.poweroff(timeout=60)
        remove_root(root)
    elapsed = time.monotonic() - started
    scores = [line for line in lines if line.startswith("SCORE ")]
    failed = [line for line in lines if line.startswith("FAIL")]
    summary = (
        f"{lines[0][5:]}; {len(failed)} failed; {elapsed:.0f} s in all"
        f" (debootstrap {bootstrap:.0f} s{', cached root' if bootstrap < 1 else ''});"
        f" scores: {'; '.join(s[6:] for s in scores)}; logs: {logs}"
    )
    (logs / "summary.txt").write_text(summary + "\n" + "\n".join(failed) + "\n")
    print(summary)
    assert not failed, summary + "\n" + "\n".join(failed)
    assert len(scores) == 3 and all(re.fullmatch(r"SCORE \S+ \d+\.\d+ \S+", s) for s in scores), (
        scores
    )
