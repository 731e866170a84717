"""``same_fs_move: rename`` through the workers (issue #16 item 4): when it
renames, and when it copies instead.

It renames a move's source into place when source and destination folder
are on one filesystem and mount; an ``as_unit`` folder as a whole, unless
the route writes ASC MHL (``mhl: true``) or the folder holds entries a copy
skips. Under ``skip_identical`` the placement compares an existing
destination with the source's hashes. A source replaced after its hash is
never delivered with the old version's checksums.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest

from ketter.store.models import JobFile

from .helpers import ketter_names, read, write
from .workers_bench import Once, Workers, events

RENAME = {"mode": "move", "same_fs_move": "rename"}


def _trail(job_id: int) -> dict[str, dict]:
    return dict(events(job_id))


def test_skip_identical_skips_and_deletes_the_source(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    data = os.urandom(100_000)
    write(bt + b"/src/f", data)
    write(bt + b"/dst/f", data)
    kept = os.stat(bt + b"/dst/f").st_ino
    (job,) = workers(conflict="skip_identical", **RENAME).transfer("r", bt + b"/src/f")
    assert job.state == "completed", job.error
    trail = _trail(job.id)
    assert trail["copy"]["rename"] is True
    assert trail["skip"]["reason"] == "identical file already at the destination"
    assert "place" not in trail
    assert os.stat(bt + b"/dst/f").st_ino == kept  # the identical one stays
    assert not os.path.exists(bt + b"/src/f")  # deleted as for any skipped move
    assert job.sha256 == hashlib.sha256(data).hexdigest()


def test_skip_identical_refuses_a_different_destination(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/f", b"the new take")
    write(bt + b"/dst/f", b"something else")
    (job,) = workers(conflict="skip_identical", **RENAME).transfer("r", bt + b"/src/f")
    assert job.state == "failed"
    assert "different content" in (job.error or "")
    assert read(bt + b"/src/f") == b"the new take"  # never removed (own_temp=False)
    assert read(bt + b"/dst/f") == b"something else"


def _unit(root: bytes) -> dict[bytes, bytes]:
    content = {}
    for i in range(5):
        rel = b"sub%d/take_%03d.wav" % (i % 2, i)
        content[rel] = os.urandom(5000 + i)
        write(root + b"/" + rel, content[rel])
    return content


def test_an_as_unit_folder_is_renamed_whole(bt: bytes, workers: Callable[..., Workers]) -> None:
    content = _unit(bt + b"/src/reel")
    ino = os.stat(bt + b"/src/reel").st_ino
    w = workers(folders="as_unit", mhl=False, **RENAME)
    (job,) = w.transfer("r", bt + b"/src/reel")
    assert job.state == "completed", job.error
    assert os.stat(bt + b"/dst/reel").st_ino == ino
    assert not os.path.exists(bt + b"/src/reel")
    for rel, data in content.items():
        assert read(bt + b"/dst/reel/" + rel) == data
    rows = {bytes(f.relpath): f.sha256 for f in JobFile.select().where(JobFile.job_id == job.id)}
    assert rows == {rel: hashlib.sha256(data).hexdigest() for rel, data in content.items()}
    assert _trail(job.id)["place"]["mode"].startswith("moved:")


def test_an_as_unit_folder_on_an_mhl_route_is_copied(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    """The generation is written into the verified copy before it is placed:
    never into the source (a failed rename would leave it changed), never
    after a rename (a crash would leave a delivered folder without it)."""
    content = _unit(bt + b"/src/reel")
    ino = os.stat(bt + b"/src/reel").st_ino
    (job,) = workers(folders="as_unit", mhl=True, **RENAME).transfer("r", bt + b"/src/reel")
    assert job.state == "completed", job.error
    assert os.stat(bt + b"/dst/reel").st_ino != ino
    assert os.listdir(bt + b"/dst/reel/ascmhl")
    assert not os.path.exists(bt + b"/src/reel")  # a move: deleted after the verified copy
    for rel, data in content.items():
        assert read(bt + b"/dst/reel/" + rel) == data
    trail = _trail(job.id)
    assert "rename" not in trail["copy"]
    assert not trail["place"]["mode"].startswith("moved:")


def test_an_as_unit_folder_holding_a_link_is_copied(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    """Renamed whole, the link would be delivered; the copy leaves it out."""
    _unit(bt + b"/src/reel")
    os.symlink(b"/etc/passwd", bt + b"/src/reel/escape")
    ino = os.stat(bt + b"/src/reel").st_ino
    (job,) = workers(folders="as_unit", mhl=False, **RENAME).transfer("r", bt + b"/src/reel")
    assert job.state == "completed", job.error
    assert os.stat(bt + b"/dst/reel").st_ino != ino
    assert not os.path.lexists(bt + b"/dst/reel/escape")
    assert os.path.islink(bt + b"/src/reel/escape")  # not the job's to delete


@pytest.fixture
def other_fs() -> Iterator[bytes]:
    """A folder on another filesystem than the test's (/dev/shm, a tmpfs)."""
    path = b"/dev/shm/ketter-test-" + uuid.uuid4().hex.encode()
    os.mkdir(path)
    yield path
    shutil.rmtree(path)


def test_another_filesystem_is_copied(
    bt: bytes, other_fs: bytes, workers: Callable[..., Workers]
) -> None:
    if os.stat(other_fs).st_dev == os.stat(bt).st_dev:
        pytest.fail("/dev/shm must be a tmpfs apart from the test's folder (mount one there)")
    data = os.urandom(50_000)
    write(other_fs + b"/f", data)
    w = workers(source=os.fsdecode(other_fs), **RENAME)
    (job,) = w.transfer("r", other_fs + b"/f")
    assert job.state == "completed", job.error
    assert read(bt + b"/dst/f") == data
    assert not os.path.exists(other_fs + b"/f")
    trail = _trail(job.id)
    assert "rename" not in trail["copy"]
    assert not trail["place"]["mode"].startswith("moved:")


def test_a_source_replaced_after_its_hash_is_not_renamed(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    """The hashes are the old version's: renaming the new one would deliver
    it with checksums that are not its own. The job ends ``superseded`` (the
    new version is a job of its own) and nothing is delivered."""
    src = bt + b"/src/big.mov"
    write(src, os.urandom(9 << 20))

    def replace() -> None:
        write(src + b".new", b"the new version")
        os.replace(src + b".new", src)

    w = workers(**RENAME)
    w.hooks.append(Once("hash", replace))
    (job,) = w.transfer("r", src)
    assert job.state == "superseded", (job.state, job.error)
    assert read(src) == b"the new version"
    assert os.listdir(bt + b"/dst") == []
    assert ketter_names(bt) == []


def test_per_file_folders_rename_each_file_and_prune_the_source(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    """``per_file``: one job per file, each renamed into the same relative
    folder; the emptied source folders go, the route root stays."""
    content = _unit(bt + b"/src/reel")
    inodes = {rel: os.stat(bt + b"/src/reel/" + rel).st_ino for rel in content}
    jobs = workers(folders="per_file", **RENAME).transfer("r", bt + b"/src/reel")
    assert [j.state for j in jobs] == ["completed"] * len(content), [j.error for j in jobs]
    for rel, data in content.items():
        final = bt + b"/dst/reel/" + rel
        assert read(final) == data and os.stat(final).st_ino == inodes[rel]
    assert os.listdir(bt + b"/src") == []


def test_overwrite_sets_the_old_version_aside_then_removes_it(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/f", b"the new take")
    write(bt + b"/dst/f", b"the old take")
    ino = os.stat(bt + b"/src/f").st_ino
    (job,) = workers(conflict="overwrite", **RENAME).transfer("r", bt + b"/src/f")
    assert job.state == "completed", job.error
    assert os.stat(bt + b"/dst/f").st_ino == ino
    assert _trail(job.id)["place"]["replaced"] is True
    assert os.listdir(bt + b"/dst") == [b"f"]  # no .old left
    assert not os.path.exists(bt + b"/src/f")


def test_the_ready_marker_goes_after_the_rename(bt: bytes, workers: Callable[..., Workers]) -> None:
    _unit(bt + b"/src/pkg")
    write(bt + b"/src/pkg.done", b"")
    w = workers(folders="as_unit", mhl=False, ready_marker=".done", **RENAME)
    (job,) = w.transfer("r", bt + b"/src/pkg")
    assert job.state == "completed", job.error
    assert _trail(job.id)["place"]["mode"].startswith("moved:")
    assert os.listdir(bt + b"/src") == []
