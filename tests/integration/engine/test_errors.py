"""Real error paths: disk full, permission denied, changing sources, mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from ketter.engine import TransferContext, TransferSpec, check_mounts, transfer
from ketter.errors import RouteUnavailable, SourceChanged

from .helpers import RecordingContext, ketter_names, read, tmpfs, write

MiB = 1024 * 1024


def test_disk_full_is_route_unavailable_and_leaves_nothing(bt: bytes) -> None:
    write(bt + b"/src/big", os.urandom(3 * MiB))
    with tmpfs(bt + b"/small", "1m") as dst:
        with pytest.raises(RouteUnavailable, match="ENOSPC"):
            transfer(TransferSpec(), bt + b"/src/big", dst, TransferContext())
        assert os.listdir(dst) == []
    assert os.path.getsize(bt + b"/src/big") == 3 * MiB


def test_disk_full_in_a_folder_leaves_nothing(bt: bytes) -> None:
    for i in range(5):
        write(bt + b"/src/d/f%d" % i, os.urandom(MiB // 3))
    with tmpfs(bt + b"/small", "1m") as dst:
        with pytest.raises(RouteUnavailable):
            transfer(
                TransferSpec(folders="as_unit", package_min_files=0),
                bt + b"/src/d",
                dst,
                TransferContext(),
            )
        assert os.listdir(dst) == []


def test_permission_denied_as_an_unprivileged_user(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    # pytest's own temp root is 0700: use a world-traversable folder instead.
    bt = os.fsencode(tempfile.mkdtemp(prefix="ketter-eacces-"))
    try:
        os.chmod(bt, 0o755)
        write(bt + b"/src/a", b"secret")
        os.makedirs(bt + b"/dst", mode=0o755)  # owned by root: nobody cannot write here
        os.chmod(bt + b"/src", 0o755)
        script = textwrap.dedent(f"""
            import os, sys
            # Import first: the interpreter's own files may not be readable by nobody.
            from ketter.engine import TransferSpec, TransferContext, transfer
            from ketter.errors import PermanentError
            os.setgroups([]); os.setgid(65534); os.setuid(65534)
            try:
                transfer(TransferSpec(), {bt + b"/src/a"!r}, {bt + b"/dst"!r},
                         TransferContext())
            except PermanentError as e:
                print("PERMANENT", e)
                sys.exit(0)
            sys.exit(3)
        """)
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        if r.returncode == 1 and "ketter" not in r.stderr:
            pytest.skip(f"cannot run the engine as nobody here: {r.stderr[-200:]}")
        assert r.returncode == 0, r.stderr
        assert "EACCES" in r.stdout and "/dst/" in r.stdout
        assert os.listdir(bt + b"/dst") == []
    finally:
        shutil.rmtree(bt)


@pytest.mark.parametrize("change", ["grow", "modify", "vanish", "replace"])
def test_source_changing_during_copy(bt: bytes, change: str) -> None:
    src = bt + b"/src/live.mov"
    write(src, os.urandom(6 * MiB))
    done = []

    def writer(bytes_done: int, phase: str) -> None:
        # Deterministic "other writer": acts at the first checkpoint.
        if phase == "copy" and not done:
            done.append(bytes_done)
            if change == "grow":
                with open(src, "ab") as f:
                    f.write(b"more")
            elif change == "modify":
                with open(src, "r+b") as f:
                    f.write(b"X")
                os.utime(src, ns=(1, 1))
            elif change == "vanish":
                os.unlink(src)
            else:
                os.rename(src, src + b".old")
                write(src, os.urandom(6 * MiB))

    spec = TransferSpec(checkpoint_bytes=MiB)
    with pytest.raises(SourceChanged):
        transfer(spec, src, bt + b"/dst", RecordingContext(on_progress=writer))
    assert done
    assert os.listdir(bt + b"/dst") == []


def test_folder_changed_after_manifest_fails_before_placement(bt: bytes) -> None:
    write(bt + b"/src/d/a", b"a")
    write(bt + b"/src/d/b", b"b")

    def add_file(point: str) -> None:
        if point == "mid-copy":
            write(bt + b"/src/d/late", b"late")

    with pytest.raises(SourceChanged, match="manifest"):
        transfer(
            TransferSpec(folders="as_unit"),
            bt + b"/src/d",
            bt + b"/dst",
            RecordingContext(on_fault=add_file),
        )
    assert os.listdir(bt + b"/dst") == []


def test_mount_guard_destination_that_stops_being_a_mount(bt: bytes) -> None:
    mnt = bt + b"/mnt"
    write(bt + b"/src/a", b"first")
    write(bt + b"/src/b", b"second")
    spec = TransferSpec(mode="move", destination_mount=mnt, destination_root=mnt + b"/share")
    with tmpfs(mnt, "4m"):
        os.mkdir(mnt + b"/share")
        devs = check_mounts(spec)
        transfer(spec, bt + b"/src/a", mnt + b"/share", TransferContext(expected_devs=devs))
        assert os.listdir(mnt + b"/share") == [b"a"]
    # Unmounted: the share is now an empty local folder on the root disk.
    os.makedirs(mnt + b"/share", exist_ok=True)
    with pytest.raises(RouteUnavailable, match="not mounted"):
        transfer(spec, bt + b"/src/b", mnt + b"/share", TransferContext(expected_devs=devs))
    assert os.listdir(mnt + b"/share") == []
    assert read(bt + b"/src/b") == b"second"  # source not deleted
    # Without a *_mount, the device recorded at job start still catches it.
    spec2 = TransferSpec(mode="move", destination_root=mnt + b"/share")
    with pytest.raises(RouteUnavailable, match="another filesystem"):
        transfer(
            spec2,
            bt + b"/src/b",
            mnt + b"/share",
            TransferContext(expected_devs={"destination": devs["destination"]}),
        )
    assert ketter_names(bt) == [] and os.path.exists(bt + b"/src/b")
