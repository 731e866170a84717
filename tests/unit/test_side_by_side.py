"""How `ketter transfer` runs the jobs of a per_file folder: in order, a few
at a time within a memory budget, and no new one after a failure."""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import pytest

from ketter.cli.transfer import _Outcome, _report, _side_by_side
from ketter.engine.copyfile import buffer_bytes
from ketter.engine.inline import INLINE_MAX

MiB = 1024 * 1024


class Out(NamedTuple):
    name: str
    state: str


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started: list[tuple[str, int]] = []  # (item, others running then)

    def __call__(self, item: tuple[str, int]) -> Out:
        name, _ = item
        with self.lock:
            self.started.append((name, self.running))
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return Out(name, "failed" if name.startswith("bad") else "completed")
        finally:
            with self.lock:
                self.running -= 1


def weight(item: tuple[str, int]) -> int:
    return item[1]


def test_results_come_in_order_and_at_most_jobs_run_at_once() -> None:
    items = [(f"f{i}", 1) for i in range(40)]
    rec = Recorder()
    out = list(_side_by_side(items, rec, 3, weight, 100))
    assert [o.name for o in out] == [name for name, _ in items]
    assert rec.most <= 3


def test_light_items_do_run_side_by_side() -> None:
    both = threading.Barrier(2, timeout=30)  # passes only if two run at once

    def run(item: tuple[str, int]) -> Out:
        both.wait()
        return Out(item[0], "completed")

    out = list(_side_by_side([("a", 1), ("b", 1)], run, 2, weight, 100))
    assert [o.name for o in out] == ["a", "b"]


def test_an_item_over_the_budget_runs_alone() -> None:
    """"a" and "b" wait (2 s at most) for a third item to run beside them:
    within the budget only they may; "big" must wait until they are done."""
    meet = threading.Barrier(3, timeout=2)
    met: list[str] = []

    def run(item: tuple[str, int]) -> Out:
        if item[0] in ("a", "b", "big"):
            try:
                meet.wait()
                met.append(item[0])
            except threading.BrokenBarrierError:
                pass
        return Out(item[0], "completed")

    items = [("a", 10), ("b", 10), ("big", 90), ("c", 10)]
    out = list(_side_by_side(items, run, 4, weight, 50))
    assert [o.name for o in out] == ["a", "b", "big", "c"]
    assert met == []  # "big" never ran beside "a" and "b"


def test_nothing_new_starts_after_a_failure_even_behind_a_slow_one() -> None:
    """"bad" fails while "slow" (started before it) still runs: "f2" must
    not start, although results are reported in order."""
    bad_ended = threading.Event()
    started: list[str] = []

    def run(item: tuple[str, int]) -> Out:
        started.append(item[0])
        if item[0] == "slow":
            bad_ended.wait(30)
            # "bad" has returned; give the loop ample time to see its
            # result before this one ends (it would see both at once anyway).
            time.sleep(1)
        if item[0] == "bad":
            bad_ended.set()
            return Out("bad", "failed")
        return Out(item[0], "completed")

    items = [("slow", 1), ("bad", 1), ("f2", 1), ("f3", 1)]
    out = list(_side_by_side(items, run, 2, weight, 100))
    assert [o.name for o in out] == ["slow", "bad"]
    assert sorted(started) == ["bad", "slow"]


def test_a_stop_request_starts_nothing_new() -> None:
    rec = Recorder()
    items = [(f"f{i}", 1) for i in range(10)]
    out = list(_side_by_side(items, rec, 1, weight, 100, stopping=lambda: bool(rec.started)))
    assert [o.name for o in out] == ["f0"]


def test_an_exception_is_raised_in_its_turn_and_stops_new_starts() -> None:
    started: list[str] = []

    def run(item: tuple[str, int]) -> Out:
        started.append(item[0])
        if item[0] == "boom":
            raise OSError("disk gone")
        return Out(item[0], "completed")

    items = [("f0", 1), ("boom", 1), *[(f"f{i}", 1) for i in range(2, 20)]]
    got: list[str] = []
    try:
        for o in _side_by_side(items, run, 1, weight, 100):
            got.append(o.name)
    except OSError as e:
        assert "disk gone" in str(e)
    else:
        raise AssertionError("the exception was swallowed")
    assert got == ["f0"]
    assert started == ["f0", "boom"]


def test_one_at_a_time_stops_right_after_the_failure() -> None:
    rec = Recorder()
    out = list(_side_by_side([("f0", 1), ("bad", 1), ("f2", 1)], rec, 1, weight, 100))
    assert [o.name for o in out] == ["f0", "bad"]
    assert [name for name, _ in rec.started] == ["f0", "bad"]


def test_buffer_estimate_covers_the_copy_paths() -> None:
    assert buffer_bytes(1000) == 2000
    assert buffer_bytes(INLINE_MAX) == 2 * INLINE_MAX
    # 8 MiB: 3 source buffers and 3 read-back buffers of 4 MiB (direct path)
    assert buffer_bytes(8 * MiB) == 24 * MiB
    # any size: never more than 8 + 3 buffers of 4 MiB
    assert buffer_bytes(2 << 30) == 44 * MiB


def _outcome(job_id: int, state: str, error: str | None = None) -> _Outcome:
    return _Outcome(job_id, state, f"/in/{job_id}", f"/out/{job_id}", 1, 1, "s", "x", "x", error)


def test_files_left_out_by_a_stop_make_the_transfer_fail(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _report([_outcome(1, "completed")], 1.0, True, not_started=3) == 1
    out, err = capsys.readouterr()
    assert '"ok": false' in out and '"not_started": 3' in out
    assert "3 file(s) not started (interrupted)" in err


def test_the_reason_names_the_job_that_failed(capsys: pytest.CaptureFixture[str]) -> None:
    jobs = [_outcome(1, "completed"), _outcome(2, "failed", "disk full"), _outcome(3, "completed")]
    assert _report(jobs, 1.0, False, not_started=5) == 1
    err = capsys.readouterr().err
    assert "job 2 failed: disk full" in err
    assert "5 file(s) not started (after a failure)" in err
