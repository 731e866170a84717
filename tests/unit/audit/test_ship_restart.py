"""When :class:`ketter.audit.ship_process.ShipperProcess` starts a shipper
that exited on its own again: after 5 s, doubled for each exit in a row
that came within a minute of its start, up to a minute; back to 5 s after
one that ran long. A real child process (``true``) stands for the shipper;
the clock is the module's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ketter.audit import ship_process
from ketter.audit.ship_process import ShipperProcess
from ketter.config import load_config


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shipper(tmp_path: Path, write_config, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    path = write_config(f"""
        state_dir: {tmp_path / "state"}
        node: n1
        routes:
          - {{name: copy, source: {tmp_path / "in"}, destination: {tmp_path / "out"}}}
        """)
    clock = _Clock()
    monkeypatch.setattr(ship_process.time, "monotonic", clock)
    sp = ShipperProcess(load_config(path), store=None)  # type: ignore[arg-type]
    starts: list[float] = []

    def start() -> None:  # a shipper that exits at once
        sp.proc = subprocess.Popen(["true"])
        sp.proc.wait()
        sp._started_at = clock.now
        sp._exited_at = None
        starts.append(sp._delay)  # the delay it was started after

    sp.start = start  # type: ignore[method-assign]
    sp.start()
    starts.clear()
    return sp, clock, starts


def _run_for(sp: ShipperProcess, clock: _Clock, seconds: float) -> None:
    end = clock.now + seconds
    while clock.now < end:
        sp.check()
        clock.now += 0.5


def test_restarts_back_off_while_the_shipper_keeps_exiting(shipper) -> None:
    sp, clock, delays = shipper
    _run_for(sp, clock, 300)
    assert delays[:5] == [5.0, 10.0, 20.0, 40.0, 60.0]
    assert set(delays[5:]) == {60.0}


def test_one_that_ran_long_is_started_again_after_5_s(shipper) -> None:
    sp, clock, delays = shipper
    _run_for(sp, clock, 40)
    assert delays == [5.0, 10.0, 20.0]
    sp.start()
    clock.now += 120  # this one ran two minutes before it exited
    sp.check()
    assert sp._delay == 5.0
    clock.now += 4.5
    sp.check()
    assert len(delays) == 4  # not yet
    clock.now += 0.5
    sp.check()
    assert delays[-1] == 5.0 and len(delays) == 5
