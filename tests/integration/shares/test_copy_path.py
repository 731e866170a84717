"""The destination's filesystem chooses the copy path too (#15 §1).

A source already in the page cache used to take the buffered path whatever
the destination: onto smbnetfs that copied at 6.8 MB/s against 82–138 MB/s
on the direct path. Onto a FUSE network mount the direct path is taken;
onto a local disk a cached source still goes buffered. The choice is in the
``verify`` event (``copy_path``), so the test reads it there rather than
timing anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import KETTER, cli_env

from .harness import Shares

SIZE = 16 << 20


def _transfer(config: Path, src: Path, dst: Path) -> str:
    """``ketter transfer`` of ``src`` into ``dst``: the path its verify event names."""
    done = subprocess.run(
        [*KETTER, "transfer", "--config", str(config), "--json", str(src), str(dst)],
        capture_output=True, text=True, env=cli_env(), timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = json.loads(done.stdout)["jobs"][0]["job_id"]
    shown = subprocess.run(
        [*KETTER, "job", "--config", str(config), "--json", str(job_id)],
        capture_output=True, text=True, env=cli_env(), timeout=120, check=True,
    )  # fmt: skip
    (verify,) = [e for e in json.loads(shown.stdout)["events"] if e["event"] == "verify"]
    return str(verify["details"]["copy_path"])


def _cached_source(path: Path) -> bytes:
    data = os.urandom(SIZE)
    path.write_bytes(data)  # just written: every page of it is in the page cache
    assert path.read_bytes() == data
    return data


def test_a_cached_source_goes_direct_onto_a_fuse_share_and_buffered_onto_a_local_disk(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    share = shares.share(protocol, "B")
    config = tmp_path / "ketter.yaml"
    config.write_text(f"state_dir: '{tmp_path / 'state'}'\nnode: n\nroutes: []\n")
    local = tmp_path / "local"
    local.mkdir()
    data = _cached_source(tmp_path / "take.mov")
    assert _transfer(config, tmp_path / "take.mov", share.root) == "direct"
    assert (share.export / "take.mov").read_bytes() == data
    _cached_source(tmp_path / "other.mov")
    assert _transfer(config, tmp_path / "other.mov", local) == "buffered"
