"""`ketter config check` warns for move and as_unit routes on a network share
without ready_marker (issue #14, finding 15): there a paused writer on another
host cannot be seen, so only a marker proves a file complete."""

from __future__ import annotations

import os
from pathlib import Path

from ketter.config import parse_config
from ketter.mounts import parse_mountinfo
from ketter.watcher.readiness import ready_marker_warnings


def test_network_move_and_as_unit_routes_without_marker_are_warned(tmp_path: Path) -> None:
    share = os.path.realpath(tmp_path / "share")
    mountinfo = (
        b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        + b"30 22 0:40 / " + os.fsencode(share) + b" rw - nfs4 fs:/in rw,vers=4.2\n"
    )
    config = parse_config(
        f"""
state_dir: {tmp_path}/state
routes:
  - {{name: net-move, source: {share}/a, destination: {tmp_path}/o1, mode: move}}
  - {{name: net-unit, source: {share}/b, destination: {tmp_path}/o2, folders: as_unit}}
  - {{name: net-copy, source: {share}/c, destination: {tmp_path}/o3}}
  - {{name: net-marked, source: {share}/d, destination: {tmp_path}/o4, mode: move,
     ready_marker: .done}}
  - {{name: local-move, source: {tmp_path}/e, destination: {tmp_path}/o5, mode: move}}
""",
        base_dir=str(tmp_path),
    )
    warnings = ready_marker_warnings(config, parse_mountinfo(mountinfo))
    assert [w.split("'")[1] for w in warnings] == ["net-move", "net-unit"]
    assert "nfs4 mount" in warnings[0] and "ready_marker" in warnings[0]
    assert "source deleted" in warnings[0] and "source deleted" not in warnings[1]


def test_no_warning_on_this_machines_local_disk(tmp_path: Path) -> None:
    config = parse_config(
        f"""
state_dir: {tmp_path}/state
routes:
  - {{name: m, source: {tmp_path}/in, destination: {tmp_path}/out, mode: move}}
""",
        base_dir=str(tmp_path),
    )
    assert ready_marker_warnings(config) == []
