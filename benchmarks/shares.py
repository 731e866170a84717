"""``make bench``, share → share (#15 §1): Ketter against ``cp && sync`` and
``rsync --checksum`` on the same real mounts.

    .venv/bin/python benchmarks/shares.py [--mib 1024] [--runs 5] [--ketter PATH]

Starts the share harness of the tests (``tests/integration/shares``: smbd +
smbnetfs and sshd + sshfs on 127.0.0.1; needs root and its Debian packages,
plus rsync) and, per protocol, writes a file of ``--mib`` MiB of random data
on the server's disk (zone A's export). Two scenarios:

* **cold share → share**: the file copied through the zone A mount to the
  zone B mount, the page cache dropped before each run (the source comes
  from the server, as on a node);
* **warm local → share**: a local file already in the page cache copied
  onto the zone B mount (what a freshly written render or a card offload
  looks like; before #15 §1 Ketter took its buffered path there).

Method (../shared/BENCHMARKING.md): every tool runs once per round, the
order rotating from round to round; before each timed run the previous
destination is removed on the server's disk, the caches are dropped (and
the warm source read back in, untimed), and memory is touched. Figures are
MB/s, median and min–max over the rounds; Ketter's ratio is its median
over each peer's. Results go to ``var/bench/shares.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import can_drop_caches, drop_caches, run_timed, say, touch_memory

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.integration.shares.harness import Share, shares_up  # noqa: E402

BENCH = REPO / "var" / "bench"
MiB = 2**20
TOOLS = ("ketter", "cp+sync", "rsync --checksum")


def _argv(tool: str, ketter: str, src: Path, out: Path, state: Path) -> list[str]:
    if tool == "ketter":
        return [ketter, "transfer", "--state-dir", str(state), str(src), str(out)]
    if tool == "cp+sync":
        return ["sh", "-c", 'cp "$1" "$2/" && sync', "cp", str(src), str(out)]
    return ["rsync", "--checksum", str(src), str(out) + "/"]


def _write_random(path: Path, mib: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MiB))


def _one(
    tool: str, ketter: str, src: Path, dst: Share, tag: str, size: int, warm: bool, tmp: Path
) -> float:
    """One timed run of ``tool``: MB/s. The destination is made and removed
    on the server's disk (untimed); the state dir is new each time."""
    out = dst.export / tag
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    state = Path(tempfile.mkdtemp(prefix="state-", dir=tmp))
    drop_caches()
    if warm:
        with open(src, "rb") as fh:  # back into the page cache, untimed
            while fh.read(8 * MiB):
                pass
    touch_memory(size)
    timed = run_timed(_argv(tool, ketter, src, dst.root / tag, state))
    if timed.returncode != 0:
        raise SystemExit(f"bench: {tool} failed ({timed.returncode}): {timed.stderr[-2000:]}")
    got = (out / src.name).stat().st_size
    if got != size:
        raise SystemExit(f"bench: {tool} delivered {got} bytes of {size}")
    shutil.rmtree(out)
    shutil.rmtree(state)
    return size / timed.seconds / 1e6


def _summary(figures: dict[str, list[float]]) -> dict[str, Any]:
    medians = {tool: statistics.median(v) for tool, v in figures.items()}
    return {
        "mb_per_s": {
            tool: {
                "median": round(medians[tool], 1),
                "min": round(min(v), 1),
                "max": round(max(v), 1),
            }
            for tool, v in figures.items()
        },
        "ratio": {
            peer: round(medians["ketter"] / medians[peer], 2)
            for peer in figures
            if peer != "ketter"
        },
    }


def _line(protocol: str, scenario: str, summary: dict[str, Any]) -> str:
    cells = []
    for tool, f in summary["mb_per_s"].items():
        ratio = summary["ratio"].get(tool)
        cells.append(
            f"{tool} {f['median']} MB/s ({f['min']}–{f['max']})"
            + (f" ratio {ratio}" if ratio is not None else "")
        )
    return f"{protocol:8} {scenario:22} " + " · ".join(cells)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--protocols", default="ssh,smb", help="ssh, smb or both (default)")
    ap.add_argument("--only", default="cold,warm", help="cold, warm or both (default)")
    ap.add_argument(
        "--ketter",
        default=str(REPO / ".venv" / "bin" / "ketter"),
        help="the ketter program to measure (another checkout's, for a before/after)",
    )
    ap.add_argument("--json", default=str(BENCH / "shares.json"), help="where the results go")
    args = ap.parse_args(argv)
    if not can_drop_caches():
        raise SystemExit("bench shares: needs root (the share servers, FUSE, drop_caches)")
    for tool in ("rsync", args.ketter):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench shares: {tool} not found")
    size = args.mib * MiB
    results: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "ketter": args.ketter,
        "mib": args.mib,
        "runs": args.runs,
        "scenarios": {},
    }
    lines = []
    BENCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ketter-bench-shares-", dir=BENCH) as tmp_name:
        tmp = Path(tmp_name)
        local = tmp / "local" / "take.mov"
        local.parent.mkdir()
        _write_random(local, args.mib)
        with shares_up(tmp / "net") as shares:
            for protocol in args.protocols.split(","):
                a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
                _write_random(a.export / "take.mov", args.mib)
                for scenario, src, warm, tools in (
                    ("cold share→share", a.root / "take.mov", False, TOOLS),
                    ("warm local→share", local, True, TOOLS[:2]),
                ):
                    if scenario.split()[0] not in args.only.split(","):
                        continue
                    figures: dict[str, list[float]] = {t: [] for t in tools}
                    for r in range(args.runs):
                        order = tools[r % len(tools) :] + tools[: r % len(tools)]
                        for tool in order:
                            mbs = _one(tool, args.ketter, src, b, f"out-{r}", size, warm, tmp)
                            figures[tool].append(mbs)
                            say(f"  {protocol} {scenario} round {r + 1}: {tool} {mbs:.1f} MB/s")
                    summary = _summary(figures)
                    results["scenarios"][f"{protocol} {scenario}"] = {**summary, "raw": figures}
                    lines.append(_line(protocol, scenario, summary))
                    say(lines[-1])
                (a.export / "take.mov").unlink()
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    say(f"\nshare benchmark, {args.mib} MiB, {args.runs} rounds, MB/s median (min–max):")
    for line in lines:
        say(line)
    say(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
