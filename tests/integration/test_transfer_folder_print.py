"""``ketter transfer`` of an as_unit folder prints its file count, bytes and
where its manifest is, not ``sha256 None`` (issue #14 finding 19)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import KETTER, cli_env


def _transfer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETTER, "transfer", "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )


def test_folder_transfer_prints_files_bytes_and_manifest(tmp_path: Path) -> None:
    shot = tmp_path / "shot"
    (shot / "sub").mkdir(parents=True)
    (shot / "a.exr").write_bytes(b"a" * 1000)
    (shot / "sub" / "b.exr").write_bytes(b"b" * 234)
    (tmp_path / "out").mkdir()
    out = _transfer(tmp_path, str(shot), str(tmp_path / "out"), "--folders", "as_unit")
    assert out.returncode == 0, out.stderr
    assert "None" not in out.stdout, out.stdout
    assert "2 file(s), 1234 bytes" in out.stdout, out.stdout
    assert "manifest: `ketter job 1`" in out.stdout, out.stdout
    assert str(tmp_path / "state" / "ketter.db") in out.stdout, out.stdout
    shown = subprocess.run(
        [*KETTER, "job", "1", "--json", "--config", _config(tmp_path)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr  # the manifest it points at
    files = json.loads(shown.stdout)["files"]
    assert sorted(f["path"] for f in files) == ["a.exr", "sub/b.exr"]
    # --json says what kind of job it was.
    again = _transfer(tmp_path, str(shot), str(tmp_path / "out2"), "--folders", "as_unit", "--json")
    assert again.returncode == 0, again.stderr
    (row,) = json.loads(again.stdout)["jobs"]
    assert row["kind"] == "folder" and row["files"] == 2


def test_file_transfer_still_prints_its_checksums(tmp_path: Path) -> None:
    (tmp_path / "clip.mov").write_bytes(b"x" * 4096)
    (tmp_path / "out").mkdir()
    out = _transfer(tmp_path, str(tmp_path / "clip.mov"), str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert "sha256 " in out.stdout and "None" not in out.stdout, out.stdout


def _config(tmp_path: Path) -> str:
    path = tmp_path / "ketter.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nroutes: []\n")
    return str(path)
