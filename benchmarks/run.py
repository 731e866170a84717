"""``make bench``: Ketter against cp, rsync, tar and rclone on the same disk.

Scenarios (``--only a,b,c``):

* a — one 2 GiB file of random data;
* b — one folder of 10,000 files of 4 KiB;
* c — one folder of 200 files of 8 MiB;
* d — only when asked: folders of 20, 200 and 2,000 files of 4 KiB, Ketter
  ``as_unit`` with and without packaging (where ``package_min_files`` pays).

Method (see ../shared/BENCHMARKING.md): every tool runs once per round and
the order rotates from round to round (A B C …, B C … A), so slow drift of
the VM hits every tool alike. Before each timed run: the previous
destination is removed (big files) or moved aside (small-file trees: ext4
without a journal is slow to create files right after deleting many),
``sync; echo 3 > /proc/sys/vm/drop_caches`` (cold source), the tool's
program is re-read untimed (cold *source*, not a cold Python import), and
memory is touched (the balloon driver would otherwise bill ~1 s/GiB of
page faults to the tool). Peers that do not fsync also run as ``… && sync``.

Everything is created under ``var/bench/work`` and removed at the end, also
on failure or Ctrl-C; only ``var/bench/results.json`` stays.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import report
from harness import (
    Peers,
    can_drop_caches,
    drop_caches,
    free_bytes,
    fs_type,
    rmtree,
    run_timed,
    say,
    touch_memory,
    tree_size,
)
from machine import describe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "var", "bench")
WORK = os.path.join(BENCH, "work")
KETTER = os.path.join(REPO, ".venv", "bin", "ketter")
GiB, MiB, KiB = 2**30, 2**20, 2**10
#: PYTHONPATH for ``--ref``: the console script's own folder comes first on
#: sys.path, then this, then the editable install's finder (appended last).
CODE_ENV: dict[str, str] = {}
#: What Ketter adds to a delivered folder: the ASC MHL hash list.
KETTER_SIDECARS = ("ascmhl",)


@dataclass
class Tool:
    name: str
    kind: str  # "ketter" or "peer"
    #: argv for (source, existing empty destination folder, ketter state dir)
    argv: Callable[[str, str, str], list[str]]
    needs: tuple[str, ...] = ()
    #: "main": every round; "secondary": ~3 of 5 rounds; "slow": 1 of 5.
    role: str = "main"


def sh(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def q(path: str) -> str:
    return shlex.quote(path)


def ketter(name: str, *opts: str, role: str = "main") -> Tool:
    def argv(src: str, dst: str, state: str) -> list[str]:
        return [KETTER, "transfer", src, dst, "--state-dir", state, "--json", *opts]

    return Tool(name, "ketter", argv, role=role)


def peer(
    name: str, script: Callable[[str, str], str], needs: tuple[str, ...] = (), role: str = "main"
) -> Tool:
    return Tool(name, "peer", lambda s, d, _st: sh(script(s, d)), needs, role)


def _rclone_dst(src: str, dst: str) -> str:
    # rclone copies a folder's *contents*: name the target folder explicitly.
    return q(os.path.join(dst, os.path.basename(src))) if os.path.isdir(src) else q(dst)


#: The P1 peer (#19): the naive durable verified pipeline, in sequence.
NAIVE = "cp && sync && evict && openssl"


def naive_pipeline(s: str, d: str) -> str:
    """``cp``, ``sync`` (durable), the copy evicted from the page cache (GNU
    dd's ``oflag=nocache`` with ``count=0`` issues ``POSIX_FADV_DONTNEED``
    over the whole file, after an ``fdatasync``: `fincore` shows 0 pages
    left), then ``openssl dgst -sha256`` of both: the source from the page
    cache (``cp`` just read it), the copy from the disk. What Ketter does,
    one step after the other."""
    out = q(os.path.join(d, os.path.basename(s)))
    return (
        f"cp {q(s)} {q(d)}/ && sync"
        f" && dd if=/dev/null of={out} oflag=nocache conv=notrunc,fdatasync count=0 status=none"
        f" && openssl dgst -sha256 {q(s)} {out}"
    )


#: The I/O of P1's work alone, one step after the other and with no hash
#: (#19): what the disk must do for a durable copy read back from it.
IO_ALONE = "cp && sync && evict && cat"


def io_alone(s: str, d: str) -> str:
    """:func:`naive_pipeline` with ``cat`` of the copy instead of
    ``openssl``: the source read, the copy written and flushed, the copy
    evicted and read back from the disk (6 GiB for 2 GiB), no hashing.
    What bounds P1 when the disk gives no more for reads and writes at once
    than one after the other (docs/performance.md, session 16)."""
    out = q(os.path.join(d, os.path.basename(s)))
    return (
        f"cp {q(s)} {q(d)}/ && sync"
        f" && dd if=/dev/null of={out} oflag=nocache conv=notrunc,fdatasync count=0 status=none"
        f" && cat {out} > /dev/null"
    )


def file_tools() -> list[Tool]:
    # The naive pipeline sits between the two Ketter runs: the order rotates
    # but stays cyclic, so every round runs each Ketter next to it.
    return [
        ketter("ketter sha256", "--verify", "sha256"),
        peer(NAIVE, naive_pipeline, ("openssl", "dd", "sync")),
        ketter("ketter xxh128", "--verify", "xxh128"),
        peer(IO_ALONE, io_alone, ("dd", "sync")),
        peer("cp", lambda s, d: f"cp {q(s)} {q(d)}/", role="secondary"),
        peer("cp && sync", lambda s, d: f"cp {q(s)} {q(d)}/ && sync"),
        peer(
            "cp && openssl sha256",
            lambda s, d: (
                f"cp {q(s)} {q(d)}/ && openssl dgst -sha256 {q(s)} "
                f"{q(os.path.join(d, os.path.basename(s)))}"
            ),
            ("openssl",),
        ),
        peer("rsync -a --checksum", lambda s, d: f"rsync -a --checksum {q(s)} {q(d)}/", ("rsync",)),
        peer(
            "rsync -a --checksum && sync",
            lambda s, d: f"rsync -a --checksum {q(s)} {q(d)}/ && sync",
            ("rsync",),
            role="secondary",
        ),
        peer(
            "rclone --checksum",
            lambda s, d: f"rclone copy -q --checksum {q(s)} {_rclone_dst(s, d)}",
            ("rclone",),
        ),
        peer(
            "rclone --checksum && sync",
            lambda s, d: f"rclone copy -q --checksum {q(s)} {_rclone_dst(s, d)} && sync",
            ("rclone",),
            role="secondary",
        ),
    ]


def folder_tools(per_file_role: str, packaged_role: str) -> list[Tool]:
    return [
        ketter("ketter per_file", "--folders", "per_file", role=per_file_role),
        ketter("ketter as_unit", "--folders", "as_unit", "--package-min-files", "0"),
        ketter(
            "ketter packaged",
            "--folders",
            "as_unit",
            "--package-min-files",
            "1",
            role=packaged_role,
        ),
        peer("cp -r && sync", lambda s, d: f"cp -r {q(s)} {q(d)}/ && sync"),
        peer(
            "rsync -a --checksum && sync",
            lambda s, d: f"rsync -a --checksum {q(s)} {q(d)}/ && sync",
            ("rsync",),
        ),
        peer(
            "tar | tar && sync",
            lambda s, d: (
                f"tar cf - -C {q(os.path.dirname(s))} {q(os.path.basename(s))}"
                f" | tar xf - -C {q(d)} && sync"
            ),
            ("tar",),
        ),
        peer(
            "rclone --checksum && sync",
            lambda s, d: f"rclone copy -q --checksum {q(s)} {_rclone_dst(s, d)} && sync",
            ("rclone",),
        ),
    ]


def sweep_tools() -> list[Tool]:
    return [
        ketter("ketter as_unit", "--folders", "as_unit", "--package-min-files", "0"),
        ketter("ketter packaged", "--folders", "as_unit", "--package-min-files", "1"),
        peer("cp -r && sync", lambda s, d: f"cp -r {q(s)} {q(d)}/ && sync"),
    ]


@dataclass
class Scenario:
    key: str
    title: str
    files: int
    file_size: int
    tools: list[Tool]
    #: "delete": few big files, removed after the run (the next run's
    #: drop_caches resets the inode caches); "trash": many small files,
    #: moved aside and deleted when the scenario ends.
    disposal: str

    @property
    def nbytes(self) -> int:
        return self.files * self.file_size

    @property
    def touch(self) -> int:
        # Source and destination both pass through the page cache.
        return min(2 * self.nbytes + 512 * MiB, 6 * GiB)


def scenarios(quick: bool) -> dict[str, Scenario]:
    big = 256 * MiB if quick else 2 * GiB
    n_small = 1000 if quick else 10_000
    n_mid = 20 if quick else 200
    return {
        "a": Scenario(
            "a", f"one {big // MiB} MiB file of random data", 1, big, file_tools(), "delete"
        ),
        "b": Scenario(
            "b",
            f"a folder of {n_small:,} files of 4 KiB",
            n_small,
            4 * KiB,
            folder_tools("slow", "main"),
            "trash",
        ),
        "c": Scenario(
            "c",
            f"a folder of {n_mid} files of 8 MiB",
            n_mid,
            8 * MiB,
            folder_tools("secondary", "secondary"),
            "delete",
        ),
        # Only with --only d: where does packaging start to pay? (package_min_files)
        **{
            f"d{n}": Scenario(
                f"d{n}",
                f"a folder of {n:,} files of 4 KiB (packaging sweep)",
                n,
                4 * KiB,
                sweep_tools(),
                "trash",
            )
            for n in ((20, 200) if quick else (20, 200, 2000))
        },
    }


DEFAULT_SCENARIOS = "a,b,c"


def make_source(sc: Scenario, root: str) -> str:
    """Random (incompressible) data; one file for (a), else one folder."""
    os.makedirs(root, exist_ok=True)
    if sc.files == 1:
        path = os.path.join(root, "take01.mov")
        _write_random(path, sc.file_size)
    else:
        path = os.path.join(root, "frames" if sc.file_size < MiB else "reels")
        os.mkdir(path)
        for i in range(sc.files):
            _write_random(os.path.join(path, f"f{i:06d}.bin"), sc.file_size)
    os.sync()
    return path


def _write_random(path: str, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def rounds_for(role: str, runs: int) -> set[int]:
    """Which rounds a tool takes part in, spread evenly over the run."""
    k = {"main": runs, "secondary": max(1, round(runs * 0.6)), "slow": max(1, runs // 5)}[role]
    if k >= runs:
        return set(range(runs))
    if k == 1:
        return {runs // 2}
    return {round(i * (runs - 1) / (k - 1)) for i in range(k)}


WARM_ARGV = {
    "cp": ["cp", "--version"],
    "rsync": ["rsync", "--version"],
    "tar": ["tar", "--version"],
    "rclone": ["rclone", "version"],
    "openssl": ["openssl", "version"],
    "dd": ["dd", "--version"],
    "sync": ["sync", "--version"],
}


def warm_program(tool: Tool, tiny: str, state: str, warm_dir: str) -> None:
    """Re-read the tool's program after the cache drop, untimed: the figure
    is about a cold *source*; a cold Python import is another question."""
    if tool.kind == "ketter":
        d = os.path.join(warm_dir, str(time.monotonic_ns()))
        os.makedirs(d)
        subprocess.run(
            [KETTER, "transfer", tiny, d, "--state-dir", state, "--json"],
            capture_output=True,
            check=False,
            env=dict(os.environ, **CODE_ENV),
        )
        return
    for t in ("cp", "bash", *tool.needs):
        if t in WARM_ARGV:
            subprocess.run(WARM_ARGV[t], capture_output=True, check=False)


def run_scenario(sc: Scenario, runs: int, peers: Peers, cold: bool) -> dict[str, Any]:
    root = os.path.join(WORK, sc.key)
    src_root, out_root, trash = (os.path.join(root, x) for x in ("src", "out", "trash"))
    state_root, warm_dir = os.path.join(root, "state"), os.path.join(root, "warm")
    need = sc.nbytes * 3 + 2 * GiB
    if free_bytes(BENCH) < need:
        raise SystemExit(
            f"bench: scenario {sc.key} needs {need / GiB:.1f} GiB free in "
            f"{BENCH}, there are {free_bytes(BENCH) / GiB:.1f}"
        )
    say(
        f"\n== ({sc.key}) {sc.title}: {'cold source' if cold else 'WARM source (not root)'}, "
        f"{runs} round(s), interleaved =="
    )
    say(f"  writing the source ({sc.nbytes / MiB:,.0f} MiB) …")
    src = make_source(sc, src_root)
    tiny = os.path.join(root, "tiny.bin")
    with open(tiny, "wb") as f:
        f.write(b"k")
    os.makedirs(trash)
    peers.ensure(sorted({n for t in sc.tools for n in t.needs}))
    result: dict[str, Any] = {
        "title": sc.title,
        "files": sc.files,
        "bytes": sc.nbytes,
        "cold_source": cold,
        "tools": {},
        "skipped": {},
    }
    tools = []
    for t in sc.tools:
        why = peers.skipped(t.needs)
        if why:
            say(f"  skipped {t.name}: {why}")
            result["skipped"][t.name] = why
            continue
        tools.append(t)
        os.makedirs(os.path.join(state_root, _slug(t.name)), exist_ok=True)
        result["tools"][t.name] = {
            "kind": t.kind,
            "role": t.role,
            "command": shlex.join(t.argv("SRC", "DST", "STATE")),
            "runs": [],
        }
    plan = {t.name: rounds_for(t.role, runs) for t in tools}
    try:
        for rnd in range(runs):
            order = tools[rnd % len(tools) :] + tools[: rnd % len(tools)]
            for t in order:
                if rnd not in plan[t.name]:
                    continue
                rec = _one_run(sc, t, rnd, src, out_root, trash, state_root, tiny, warm_dir, cold)
                result["tools"][t.name]["runs"].append(rec)
                extra = (
                    f" (ketter {rec['ketter_seconds']:.2f} s)"
                    if rec.get("ketter_seconds") is not None
                    else ""
                )
                say(
                    f"  round {rnd + 1}/{runs}  {t.name:<30} "
                    f"{rec['seconds']:8.2f} s{extra}  rss {rec['maxrss_kb'] / 1024:6.1f} MiB"
                    f"{'' if rec['ok'] else '  FAILED: ' + rec['error']}"
                )
    finally:
        say("  removing the destinations and the source …")
        for d in (out_root, trash, src_root, warm_dir):
            rmtree(d)
        if cold:
            drop_caches(2)  # forget the deleted inodes before the next scenario
    for t in result["tools"].values():
        report.summarize(t, sc.files, sc.nbytes)
    result["ratios"] = report.ratios(result["tools"])
    return result


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _one_run(
    sc: Scenario,
    t: Tool,
    rnd: int,
    src: str,
    out_root: str,
    trash: str,
    state_root: str,
    tiny: str,
    warm_dir: str,
    cold: bool,
) -> dict[str, Any]:
    dst = os.path.join(out_root, f"{_slug(t.name)}-r{rnd + 1}")
    os.makedirs(dst)
    state = os.path.join(state_root, _slug(t.name))
    if cold:
        drop_caches(3)
    warm_program(t, tiny, state, warm_dir)
    touch_memory(sc.touch)  # last: the run starts while these pages are warm
    env = dict(os.environ, RCLONE_CONFIG=os.path.join(WORK, "rclone.conf"), **CODE_ENV)
    load1 = os.getloadavg()[0]  # others' work on a shared VM
    r = run_timed(t.argv(src, dst, state), env=env)
    rec: dict[str, Any] = {
        "round": rnd + 1,
        "at": time.strftime("%H:%M:%S"),
        "seconds": round(r.seconds, 3),
        "maxrss_kb": r.maxrss_kb,
        "load1_before": load1,
        "ok": r.returncode == 0,
        "error": "",
    }
    if r.returncode != 0:
        rec["error"] = f"exit {r.returncode}: {r.stderr.strip()[-400:]}"
    if t.kind == "ketter" and r.returncode == 0:
        try:
            out = json.loads(r.stdout)
            rec["ketter_seconds"] = out["seconds"]
            if not out["ok"]:
                rec.update(ok=False, error="ketter reported ok=false")
        except (ValueError, KeyError) as e:
            rec.update(ok=False, error=f"unreadable --json output ({e})")
    final = os.path.join(dst, os.path.basename(src))
    if rec["ok"]:
        got = (
            tree_size(final, KETTER_SIDECARS if t.kind == "ketter" else ())
            if os.path.exists(final)
            else (0, 0)
        )
        if got != (sc.files, sc.nbytes):
            rec.update(
                ok=False,
                error=f"destination has {got[0]} files / {got[1]} bytes, "
                f"expected {sc.files} / {sc.nbytes}",
            )
    if sc.disposal == "trash":
        os.rename(dst, os.path.join(trash, os.path.basename(dst)))
    else:
        rmtree(dst)
    return rec


def checkout_code(ref: str) -> dict[str, Any]:
    """Ketter as committed at ``ref`` (``git archive``), for a shared working
    tree where someone else's half-done edit must not end up in the figures."""
    sha = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    code = os.path.join(WORK, "code")
    os.makedirs(code)
    subprocess.run(
        sh(f"git -C {q(REPO)} archive {sha} ketter | tar xf - -C {q(code)}"),
        check=True,
    )
    CODE_ENV["PYTHONPATH"] = code
    probe = subprocess.run(
        [
            os.path.join(os.path.dirname(KETTER), "python"),
            "-c",
            "import ketter; print(ketter.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        env=dict(os.environ, **CODE_ENV),
        check=True,
    ).stdout.strip()
    if not probe.startswith(code):
        raise SystemExit(f"bench: --ref {ref}: Python still imports Ketter from {probe}")
    return {"ref": ref, "commit": sha, "from": "git archive"}


def _dirty() -> list[str]:
    r = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--", "ketter"], capture_output=True, text=True
    )
    return [line[3:] for line in r.stdout.splitlines()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small data (256 MiB, 1,000 and 20 files), 1 round",
    )
    ap.add_argument(
        "--only",
        default=DEFAULT_SCENARIOS,
        help="scenarios: a, b, c, a list (a,c), or d: the package_min_files sweep "
        "(folders of 20, 200, 2,000 small files; not run by default)",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=None,
        help="rounds (default 5, 1 with --quick); secondary peers take part in "
        "~60%% of the rounds, Ketter per_file on 10,000 files in 1 of 5",
    )
    ap.add_argument(
        "--ref",
        help="benchmark Ketter as committed at this git revision (e.g. HEAD) instead "
        "of the working tree",
    )
    ap.add_argument(
        "--json",
        default=os.path.join(BENCH, "results.json"),
        help="where to write the results (default var/bench/results.json)",
    )
    args = ap.parse_args(argv)
    runs = args.runs or (1 if args.quick else 5)
    all_sc = scenarios(args.quick)
    wanted = [
        key
        for w in args.only.split(",")
        if w.strip()
        for key in (
            sorted((k for k in all_sc if k.startswith("d")), key=lambda k: int(k[1:]))
            if w.strip() == "d"
            else [w.strip()]
        )
    ]
    if any(w not in all_sc for w in wanted) or not wanted:
        ap.error(f"--only takes a, b, c, d or a comma-separated list, not {args.only!r}")
    if not os.access(KETTER, os.X_OK):
        raise SystemExit(f"bench: {KETTER} not found; run `make install` first")

    os.makedirs(BENCH, exist_ok=True)
    fstype = fs_type(BENCH)[0]
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(
            f"bench: {BENCH} is on {fstype}; the figures would be about memory, "
            "not a disk. Put var/ on a disk."
        )
    cold = can_drop_caches()
    if not cold:
        say("bench: not root, cannot drop the page cache: every figure is a WARM source")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    rmtree(WORK)  # leftovers of an interrupted run
    os.makedirs(WORK)
    peers = Peers()
    # The working tree may be shared: say whether Ketter's code under test
    # differs from the commit named in the results.
    dirty_at_start = _dirty()
    started = time.monotonic()
    results: dict[str, Any] = {}
    try:
        machine = describe(BENCH, KETTER)
        say(
            f"bench: {machine['cpu']}, {machine['nproc']} CPU, {machine['ram_gib']} GiB RAM, "
            f"{machine['fs']['type']} on {machine['disk']['device']}, kernel {machine['kernel']}"
        )
        code = checkout_code(args.ref) if args.ref else {"from": "working tree"}
        say(
            f"bench: Ketter from the {code['from']}"
            + (f" of {code['commit'][:10]}" if "commit" in code else "")
        )
        for key in wanted:
            results[key] = run_scenario(all_sc[key], runs, peers, cold)
    finally:
        rmtree(WORK)
    checks = report.targets(results, quick=args.quick)
    doc = {
        "ketter_code": code,
        "ketter_tree_changes": {"start": dirty_at_start, "end": _dirty()},
        "generated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "quick": args.quick,
        "rounds": runs,
        "source": "cold (sync; echo 3 > drop_caches before every run)" if cold else "warm",
        "wall_seconds": round(time.monotonic() - started),
        "machine": machine,
        "scenarios": results,
        "targets": checks,
    }
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
    for key, sc in results.items():
        say(f"\n### ({key}) {sc['title']} — {'cold source' if sc['cold_source'] else 'warm'}")
        say("\n".join(report.table(sc)))
        say("")
        say("\n".join(report.ratio_table(sc)))
    say("\n### Targets")
    say("\n".join(report.target_lines(checks)))
    say(f"\nwall time {doc['wall_seconds']} s; results in {os.path.relpath(args.json, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
