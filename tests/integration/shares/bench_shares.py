"""Share → share throughput: Ketter against ``cp && sync`` and ``rsync
--checksum`` on the same real mounts (#15 §1 benchmark).

    PYTHONPATH=. python -m tests.integration.shares.bench_shares [MiB]

Starts the harness (smbd + smbnetfs, sshd + sshfs on loopback), writes a
file of MiB (default 1024) on each protocol's zone A export, and copies it
to zone B through the mounts three ways, the page cache dropped before each
(so the source is read from the share, as on a node); prints MB/s and
Ketter's ratio to each. Needs root (drop_caches) and the Debian packages
of the harness, plus rsync.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import KETTER, cli_env

from .harness import shares_up


def _drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def _timed(argv: list[str], **env: str) -> float:
    _drop_caches()
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=cli_env(**env), timeout=3600)
    return time.monotonic() - started


def main(mib: int) -> None:
    size = mib * 2**20
    with (
        tempfile.TemporaryDirectory(prefix="ketter-bench-") as tmp,
        shares_up(Path(tmp) / "net") as shares,
    ):
        for protocol in ("ssh", "smb"):
            a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
            src = a.export / "bench.mov"
            with open(src, "wb") as fh:
                for _ in range(mib):
                    fh.write(os.urandom(2**20))
            results = {}
            for name in ("ketter", "cp+sync", "rsync"):
                out = b.root / name
                out.mkdir()
                if name == "ketter":
                    argv = [
                        *KETTER,
                        "transfer",
                        "--state-dir",
                        f"{tmp}/state-{protocol}",
                        str(a.root / "bench.mov"),
                        str(out),
                    ]
                elif name == "cp+sync":
                    argv = ["sh", "-c", f'cp "{a.root}/bench.mov" "{out}/" && sync']
                else:
                    argv = ["rsync", "--checksum", str(a.root / "bench.mov"), str(out) + "/"]
                seconds = _timed(argv)
                results[name] = size / seconds / 1e6
                assert (b.export / name / "bench.mov").stat().st_size == size
                shutil.rmtree(b.export / name)
            src.unlink()
            k = results["ketter"]
            print(
                f"{protocol}: {mib} MiB share→share  ketter {k:.1f} MB/s (verified, sha256)  "
                f"cp+sync {results['cp+sync']:.1f} MB/s (ratio {k / results['cp+sync']:.2f})  "
                f"rsync --checksum {results['rsync']:.1f} MB/s (ratio {k / results['rsync']:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
