from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ketter.config.schema import RouteConfig
from ketter.watcher import mounts

SAMPLE = b"""\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/ingest rw shared:5 - nfs4 fs:/in rw,vers=4.2,acregmin=3,acregmax=45,hard
31 22 0:41 / /mnt/dub rw - cifs //srv/dub rw,vers=3.1.1,actimeo=1
32 22 0:42 / /mnt/with\\040space rw - tmpfs tmpfs rw
33 22 0:43 / /mnt/auto rw - autofs systemd-1 rw,fd=50
34 30 0:44 / /mnt/ingest/local rw - xfs /dev/sdb1 rw
"""


def test_parse_mountinfo() -> None:
    parsed = mounts.parse_mountinfo(SAMPLE)
    assert [m.fs_type for m in parsed] == ["ext4", "nfs4", "cifs", "tmpfs", "autofs", "xfs"]
    assert parsed[3].mount_point == b"/mnt/with space"
    assert parsed[1].option("acregmax") == "45"


def test_mount_of_is_the_longest_prefix() -> None:
    parsed = mounts.parse_mountinfo(SAMPLE)
    of = lambda p: mounts.mount_of(p, parsed)  # noqa: E731
    assert of(b"/mnt/ingest/in").fs_type == "nfs4"
    assert of(b"/mnt/ingest/local/x").fs_type == "xfs"
    assert of(b"/mnt/ingestion").fs_type == "ext4"  # a prefix of the name is not a parent
    assert of(b"/srv").fs_type == "ext4"


def test_attribute_cache_seconds() -> None:
    nfs, cifs, tmp = (mounts.parse_mountinfo(SAMPLE)[i] for i in (1, 2, 3))
    assert mounts.attribute_cache_seconds(nfs) == 45
    assert mounts.attribute_cache_seconds(cifs) == 1
    assert mounts.attribute_cache_seconds(tmp) is None
    bare = dataclasses.replace(nfs, options="rw,hard")
    assert mounts.attribute_cache_seconds(bare) == 60  # the NFS default
    assert not mounts.is_network_mount(mounts.parse_mountinfo(SAMPLE)[0])
    assert mounts.is_network_mount(nfs)


def test_choose_watch(tmp_path: Path) -> None:
    route = RouteConfig(name="r", source=str(tmp_path), destination="/x")
    root = os.fsencode(tmp_path)
    assert mounts.choose_watch(dataclasses.replace(route, watch="polling"), root)[0] == "polling"
    assert mounts.choose_watch(dataclasses.replace(route, watch="native"), root)[0] == "native"
    mode, reason = mounts.choose_watch(route, root)
    fs = mounts.mount_of(root)
    assert fs is not None
    assert mode == ("native" if fs.fs_type in mounts.LOCAL_FS_TYPES else "polling"), reason


def test_check_root(tmp_path: Path) -> None:
    route = RouteConfig(name="r", source=str(tmp_path / "src"), destination="/x")
    root = os.fsencode(tmp_path / "src")
    assert "does not exist" in (mounts.check_root(route, root) or "")
    (tmp_path / "src").mkdir()
    assert mounts.check_root(route, root) is None
    unmounted = dataclasses.replace(route, source_mount=str(tmp_path))
    assert "not mounted" in (mounts.check_root(unmounted, root) or "")
    (tmp_path / "file").write_bytes(b"")
    assert "not a folder" in (mounts.check_root(route, os.fsencode(tmp_path / "file")) or "")


def test_root_mount_point_is_a_mount() -> None:
    assert mounts.is_mount_point(b"/")
    route = RouteConfig(name="r", source="/", destination="/x", source_mount="/")
    assert mounts.check_root(route, b"/") is None


@pytest.mark.root
def test_one_mount_check_for_a_same_device_bind_mount(tmp_path: Path) -> None:
    """Issue #14 finding 5: the watcher, the job guard, the resume check and
    `config check` give the same answer for a bind mount on the same device,
    mounted (it is) and unmounted (it is not). ``os.path.ismount`` said "not
    mounted" for the mounted one."""
    from ketter.config import parse_config
    from ketter.config.loader import check_roots
    from ketter.engine.mounts import check_mounts
    from ketter.engine.spec import TransferSpec
    from ketter.errors import RouteUnavailable
    from ketter.jobs.routes import unavailable_reason
    from tests.integration.jobs.pausing import mount, umount, unmounted_at_exit

    backing, share = tmp_path / "backing", tmp_path / "share"
    # The roots exist under the bare folder too: only the mount check can tell.
    for top in (backing, share):
        (top / "in").mkdir(parents=True)
        (top / "out").mkdir()
    config = parse_config(
        f"state_dir: {tmp_path}/state\nroutes:\n"
        f"  - {{name: r, source: {share}/in, destination: {share}/out, "
        f"source_mount: {share}, destination_mount: {share}}}\n",
        base_dir=str(tmp_path),
    )
    route = config.route("r")
    root = os.fsencode(share / "in")
    spec = TransferSpec(source_root=root, destination_root=os.fsencode(share / "out"),
                        source_mount=os.fsencode(share), destination_mount=os.fsencode(share))

    def answers() -> list[bool]:
        try:
            check_mounts(spec)
            guard = True
        except RouteUnavailable:
            guard = False
        return [
            mounts.is_mount_point(share),
            mounts.check_root(route, root) is None,
            guard,
            unavailable_reason(route) is None,
            check_roots(config)[0] == [],
        ]

    assert answers() == [False] * 5  # a plain folder: not mounted, whoever asks
    with unmounted_at_exit(share):
        mount("--bind", str(backing), str(share))
        assert os.stat(share).st_dev == os.stat(tmp_path).st_dev
        assert answers() == [True] * 5
        umount(share)
        assert answers() == [False] * 5
        assert "is not mounted" in (unavailable_reason(route) or "")
        assert any("is not mounted" in e for e in check_roots(config)[0])
