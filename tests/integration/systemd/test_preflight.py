"""A machine that cannot boot the systemd container says exactly why (the
boot test fails with this reason; it never skips)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.systemd.machine import CannotBoot, host_mirror, host_suite, preflight


def test_preflight_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no debootstrap, no systemd-nspawn here
    with pytest.raises(CannotBoot) as raised:
        preflight()
    if os.geteuid() != 0:
        assert "needs root" in str(raised.value)
    else:
        assert "apt-get install" in str(raised.value)
        for package in ("debootstrap", "systemd-container", "util-linux"):
            assert package in str(raised.value)


def test_the_host_names_a_suite_and_a_mirror() -> None:
    # On a Debian host with apt (CI, this machine); elsewhere the boot test
    # fails with the reason these raise.
    try:
        suite, mirror = host_suite(), host_mirror()
    except CannotBoot as exc:
        pytest.fail(f"the boot test could not run here: {exc}")
    assert suite.isalpha()
    assert mirror.startswith(("http://", "https://"))
