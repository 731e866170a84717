"""The extractor refuses every member that is not exactly a manifest member."""

from __future__ import annotations

import os
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

from ketter.engine import FileEntry, extract_package, member_name
from ketter.errors import PermanentError

MANIFEST = [
    FileEntry(b"a/\xff name", 3, 1_000_000_000, 0o100640, 1),
    FileEntry(b"b", 2, 2_000_000_000, 0o100600, 2),
]


def _zip(path: Path, members: list[tuple[str, bytes, int]]) -> bytes:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": that is the point
        for name, data, ftype in members:
            zi = zipfile.ZipInfo(name)
            zi.external_attr = (ftype | 0o644) << 16
            zf.writestr(zi, data)
    return os.fsencode(path)


GOOD = [(member_name(1), b"abc", stat.S_IFREG), (member_name(2), b"de", stat.S_IFREG)]


def _target(tmp_path: Path) -> bytes:
    t = os.fsencode(tmp_path / "out")
    os.makedirs(t + b"/a")
    return t


def test_good_package_gets_real_names_modes_and_mtimes(tmp_path: Path) -> None:
    z = _zip(tmp_path / "p.zip", GOOD)
    target = _target(tmp_path)
    extract_package(z, MANIFEST, target)
    st = os.stat(target + b"/a/\xff name")
    with open(target + b"/a/\xff name", "rb") as f:
        assert f.read() == b"abc"
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, 1_000_000_000)


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([("/etc/evil", b"abc", stat.S_IFREG), GOOD[1]], id="absolute"),
        pytest.param([("../evil", b"abc", stat.S_IFREG), GOOD[1]], id="dotdot"),
        pytest.param([("000001/../../x", b"abc", stat.S_IFREG), GOOD[1]], id="index-dotdot"),
        pytest.param([(member_name(1), b"/etc/passwd", stat.S_IFLNK), GOOD[1]], id="symlink"),
        pytest.param([*GOOD, (member_name(3), b"x", stat.S_IFREG)], id="extra-member"),
        pytest.param([*GOOD, (member_name(2), b"de", stat.S_IFREG)], id="duplicate"),
        pytest.param([GOOD[0]], id="missing-member"),
        pytest.param([(member_name(1), b"abcd", stat.S_IFREG), GOOD[1]], id="wrong-size"),
        pytest.param([("000001/", b"", stat.S_IFDIR), GOOD[1]], id="directory"),
        pytest.param([("a/é name", b"abc", stat.S_IFREG), GOOD[1]], id="real-name"),
    ],
)
def test_malicious_packages_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes, int]]
) -> None:
    try:
        z = _zip(tmp_path / "evil.zip", members)
    except (UnicodeEncodeError, ValueError):
        pytest.skip("zipfile cannot even write this name")
    target = _target(tmp_path)
    with pytest.raises(PermanentError, match="refused"):
        extract_package(z, MANIFEST, target)
    assert not os.path.exists(tmp_path / "evil")
    assert not os.path.exists("/etc/evil")
    assert sorted(os.listdir(target)) == [b"a"] and os.listdir(target + b"/a") == []


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"not a zip at all")
    with pytest.raises(PermanentError, match="refused"):
        extract_package(os.fsencode(tmp_path / "x.zip"), MANIFEST, _target(tmp_path))
