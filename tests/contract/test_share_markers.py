"""Shared-storage markers (issue #18 item 6) on every job store: the first
node's id is recorded and kept; a node that finds another share, or none,
at a route root is told which path, which id it expected and which it found;
the marker is never swept as a leftover."""

from __future__ import annotations

import os
from pathlib import Path

from ketter.config import RouteConfig
from ketter.engine.cleanup import find_orphans
from ketter.jobs.shares import ShareCheck, marker_name, read_marker, write_marker
from ketter.store.port import JobStore


def test_the_first_record_is_kept(job_store: JobStore) -> None:
    assert job_store.share_marker("r", "source") is None
    first = job_store.record_share_marker(
        "r", "source", path="/mnt/a", marker="aaa", node="n1", now=1.0
    )
    second = job_store.record_share_marker(
        "r", "source", path="/mnt/a", marker="bbb", node="n2", now=2.0
    )
    assert (first, second) == ("aaa", "aaa")
    assert job_store.share_marker("r", "source") == "aaa"
    assert job_store.share_marker("r", "destination") is None


def _route(root: Path, mode: str = "move") -> RouteConfig:
    for side in ("src", "dst"):
        (root / side).mkdir(parents=True, exist_ok=True)
    return RouteConfig(
        name="dub", source=str(root / "src"), destination=str(root / "dst"), mode=mode
    )


def test_a_node_on_another_share_is_refused(job_store: JobStore, tmp_path: Path) -> None:
    right = _route(tmp_path / "share")
    assert ShareCheck(job_store, "n1").problem(right) is None  # the first node writes them
    name = marker_name("dub")
    ids = {side: read_marker(str(tmp_path / "share" / side / name)) for side in ("src", "dst")}
    assert all(ids.values()) and ids["src"] != ids["dst"]
    # Another node, the same share: fine. Nothing new is written.
    assert ShareCheck(job_store, "n2").problem(right) is None
    assert read_marker(str(tmp_path / "share" / "src" / name)) == ids["src"]
    # Another node, nothing mounted (an empty folder): refused, and no
    # marker is written there.
    wrong = _route(tmp_path / "empty")
    problem = ShareCheck(job_store, "n2").problem(wrong)
    assert problem is not None
    assert str(tmp_path / "empty" / "dst" / name) in problem
    assert ids["dst"] in problem and "none (no such file)" in problem
    assert not os.path.exists(tmp_path / "empty" / "dst" / name)
    assert not os.path.exists(tmp_path / "empty" / "src" / name)
    # The destination right, the (move route's) source another share with a
    # marker of its own: the found id is named.
    (tmp_path / "empty" / "dst" / name).write_text(ids["dst"] + "\n")
    (tmp_path / "empty" / "src" / name).write_text("0123\n")
    problem = ShareCheck(job_store, "n2").problem(wrong)
    assert problem is not None and str(tmp_path / "empty" / "src" / name) in problem
    assert "'0123'" in problem and ids["src"] in problem
    # Never a leftover for the orphan sweep.
    dst = os.fsencode(tmp_path / "share" / "dst")
    assert find_orphans(dst, lambda job: False) == []
    assert os.path.exists(tmp_path / "share" / "dst" / name)


def test_a_marker_being_written_is_never_recorded_empty(
    job_store: JobStore, tmp_path: Path
) -> None:
    """Another writer's marker created but not written yet (a share without
    hard links) or left empty by a crash: the route waits, nothing is
    recorded; once the file holds its id, that id is the share's."""
    route = _route(tmp_path / "share")
    marker = tmp_path / "share" / "src" / marker_name("dub")
    marker.write_bytes(b"")
    problem = ShareCheck(job_store, "n1").problem(route)
    assert problem is not None and "is empty" in problem and str(marker) in problem
    assert job_store.share_marker("dub", "source") is None
    marker.write_text("feed\n")  # the other writer finishes
    assert ShareCheck(job_store, "n1").problem(route) is None
    assert job_store.share_marker("dub", "source") == "feed"


def test_two_writers_keep_one_marker_and_no_temporary(tmp_path: Path) -> None:
    """The marker appears whole under its name or not at all: a second
    writer gets the first one's id; no temporary is left beside it."""
    path = str(tmp_path / marker_name("dub"))
    assert write_marker(path, "aaa") == "aaa"
    assert write_marker(path, "bbb") == "aaa"
    assert read_marker(path) == "aaa"
    assert sorted(os.listdir(tmp_path)) == [marker_name("dub")]


def test_a_copy_routes_source_is_never_written(job_store: JobStore, tmp_path: Path) -> None:
    """A copy route's source may be read-only (a share mounted so, or the
    workers' unit): only its destination carries a marker."""
    route = _route(tmp_path / "share", mode="copy")
    assert ShareCheck(job_store, "n1").problem(route) is None
    assert os.listdir(tmp_path / "share" / "src") == []
    assert read_marker(str(tmp_path / "share" / "dst" / marker_name("dub")))
    assert job_store.share_marker("dub", "source") is None
    assert job_store.share_marker("dub", "destination") is not None


def test_a_marker_that_is_no_regular_file_is_refused(job_store: JobStore, tmp_path: Path) -> None:
    """A symlink at the marker's name is not followed (it could lend a wrong
    share the right id), a FIFO does not hang the check: the route waits,
    saying the marker cannot be read."""
    right = _route(tmp_path / "share")
    assert ShareCheck(job_store, "n1").problem(right) is None
    name = marker_name("dub")
    good = tmp_path / "share" / "dst" / name
    wrong = _route(tmp_path / "other")
    (tmp_path / "other" / "src" / name).symlink_to(tmp_path / "share" / "src" / name)
    os.symlink(good, tmp_path / "other" / "dst" / name)
    problem = ShareCheck(job_store, "n2").problem(wrong)
    assert problem is not None and "cannot be read" in problem, problem
    for side in ("src", "dst"):
        os.unlink(tmp_path / "other" / side / name)
        os.mkfifo(tmp_path / "other" / side / name)
    problem = ShareCheck(job_store, "n2").problem(wrong)  # returns: no reader blocks
    assert problem is not None and "cannot be read" in problem, problem


def test_a_share_gone_under_a_good_answer_is_checked_again_at_once(
    job_store: JobStore, tmp_path: Path
) -> None:
    """A good answer is kept RECHECK seconds only while the root is the same
    folder: a share unmounted under it (its empty mount point is another
    device and inode, here another folder put at the same path) is refused
    at the next job, not once the answer has aged."""
    route = _route(tmp_path / "share")
    now = [0.0]
    check = ShareCheck(job_store, "n1", clock=lambda: now[0])
    assert check.problem(route) is None
    now[0] = 1.0  # well inside RECHECK
    assert check.problem(route) is None
    os.rename(tmp_path / "share" / "dst", tmp_path / "share" / "dst.mounted")
    (tmp_path / "share" / "dst").mkdir()  # what an unmount leaves: an empty folder
    problem = check.problem(route)
    assert problem is not None and "none (no such file)" in problem, problem
    # The share back (the same folder): good again.
    (tmp_path / "share" / "dst").rmdir()
    os.rename(tmp_path / "share" / "dst.mounted", tmp_path / "share" / "dst")
    assert check.problem(route) is None
