"""Statistics, ratio tables and the issue's targets for ``make bench``."""

from __future__ import annotations

import statistics
from typing import Any

MB = 1e6


def summarize(tool: dict[str, Any], files: int, nbytes: int) -> None:
    """Add median/min/max, MB/s, files/s and peak RSS to a tool's record."""
    ok = [r for r in tool["runs"] if r["ok"]]
    tool["ok_runs"] = len(ok)
    if not ok:
        return
    secs = [r["seconds"] for r in ok]
    med = statistics.median(secs)
    tool.update(
        median=round(med, 3),
        min=round(min(secs), 3),
        max=round(max(secs), 3),
        mb_s=round(nbytes / med / MB, 1),
        files_s=round(files / med, 1),
        peak_rss_mb=round(max(r["maxrss_kb"] for r in ok) * 1024 / MB, 1),
    )
    inner = [r["ketter_seconds"] for r in ok if r.get("ketter_seconds") is not None]
    if inner:
        tool["ketter_seconds_median"] = round(statistics.median(inner), 3)


def ratios(tools: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Ketter's median over each peer's median (below 1.0: Ketter is faster)."""
    out: dict[str, dict[str, float]] = {}
    for kname, k in tools.items():
        if k["kind"] != "ketter" or "median" not in k:
            continue
        out[kname] = {
            pname: round(k["median"] / p["median"], 2)
            for pname, p in tools.items()
            if p["kind"] == "peer" and "median" in p
        }
    return out


def table(scenario: dict[str, Any]) -> list[str]:
    """The results table of one scenario, as Markdown."""
    lines = [
        "| tool | runs | median s | min–max s | MB/s | files/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in scenario["tools"].items():
        if "median" not in t:
            why = scenario["skipped"].get(name, "every run failed")
            lines.append(f"| {_cell(name)} | 0 | — | — | — | — | — ({why}) |")
            continue
        inner = (
            f" (in-process {t['ketter_seconds_median']:.2f})"
            if "ketter_seconds_median" in t
            else ""
        )
        lines.append(
            f"| {_cell(name)} | {t['ok_runs']} | {t['median']:.2f}{inner} | "
            f"{t['min']:.2f}–{t['max']:.2f} | {_num(t['mb_s'])} | {_num(t['files_s'])} | "
            f"{t['peak_rss_mb']:.0f} |"
        )
    for name, why in scenario["skipped"].items():
        if name not in scenario["tools"]:
            lines.append(f"| {_cell(name)} | skipped | — | — | — | — | — ({why}) |")
    return lines


def _cell(name: str) -> str:
    """A tool name inside a Markdown table (``tar | tar`` would split the cell)."""
    return name.replace("|", "\\|")


def _num(x: float) -> str:
    """Three significant figures at most, no decimals above 100."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def ratio_table(scenario: dict[str, Any]) -> list[str]:
    r = scenario["ratios"]
    if not r:
        return []
    peers = list(next(iter(r.values())).keys())
    lines = [
        "| Ketter ÷ peer (median/median) | " + " | ".join(map(_cell, peers)) + " |",
        "|---|" + "---:|" * len(peers),
    ]
    for kname, row in r.items():
        lines.append(f"| {kname} | " + " | ".join(f"{row[p]:.2f}×" for p in peers) + " |")
    return lines


def _ratio(results: dict[str, Any], sc: str, ketter: str, peer: str) -> float | None:
    return results.get(sc, {}).get("ratios", {}).get(ketter, {}).get(peer)


#: The P1 peer of #19 (benchmarks/run.py ``NAIVE``).
NAIVE = "cp && sync && evict && openssl"
#: P1's I/O alone, no hash (benchmarks/run.py ``IO_ALONE``).
IO_ALONE = "cp && sync && evict && cat"


def _medians(results: dict[str, Any], sc: str, a: str, b: str) -> float | None:
    """Median of ``a`` ÷ median of ``b``, any two tools of a scenario."""
    tools = results.get(sc, {}).get("tools", {})
    if a not in tools or b not in tools or not tools[b].get("median"):
        return None
    return round(float(tools[a]["median"]) / float(tools[b]["median"]), 3)


def paired(results: dict[str, Any], sc: str, ketter: str, peer: str) -> dict[str, Any] | None:
    """Ketter ÷ peer round by round (both ran in the same round, both ok):
    the median and range of those ratios, and how many pairs."""
    tools = results.get(sc, {}).get("tools", {})
    if ketter not in tools or peer not in tools:
        return None
    k = {r["round"]: r["seconds"] for r in tools[ketter]["runs"] if r["ok"]}
    p = {r["round"]: r["seconds"] for r in tools[peer]["runs"] if r["ok"]}
    rs = [k[n] / p[n] for n in sorted(k.keys() & p.keys())]
    if not rs:
        return None
    return {
        "pairs": len(rs),
        "median": round(statistics.median(rs), 3),
        "min": round(min(rs), 3),
        "max": round(max(rs), 3),
    }


def targets(results: dict[str, Any], *, quick: bool = False) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured ratio and met/not met.

    With ``quick`` the sizes are smaller than the targets name (fixed costs
    weigh more): every check is marked as a smoke figure, not a verdict.
    """
    checks: list[tuple[str, str, str, str, float, bool]] = [
        # (description, scenario, ketter tool, peer, limit, strict "<")
        (
            "2 GiB sha256 ≤ 1.0× cp && openssl",
            "a",
            "ketter sha256",
            "cp && openssl sha256",
            1.0,
            False,
        ),
        (
            "2 GiB sha256 faster than rsync --checksum (stretch)",
            "a",
            "ketter sha256",
            "rsync -a --checksum",
            1.0,
            True,
        ),
        (
            "2 GiB xxh128 ≤ 0.8× cp && openssl",
            "a",
            "ketter xxh128",
            "cp && openssl sha256",
            0.8,
            False,
        ),
        (
            "2 GiB xxh128 ≤ 1.0× rsync --checksum",
            "a",
            "ketter xxh128",
            "rsync -a --checksum",
            1.0,
            False,
        ),
        (
            "P2: 10,000 × 4 KiB as_unit ≤ 1.5× rsync -a --checksum && sync (#19)",
            "b",
            "ketter as_unit",
            "rsync -a --checksum && sync",
            1.5,
            False,
        ),
    ]
    checks += [
        (f"P1: 2 GiB sha256 ≤ 0.45× {NAIVE} (#19)", "a", "ketter sha256", NAIVE, 0.45, False),
        (f"P1: 2 GiB xxh128 ≤ 0.35× {NAIVE} (#19)", "a", "ketter xxh128", NAIVE, 0.35, False),
    ]
    out: list[dict[str, Any]] = []
    for desc, sc, k, p, limit, strict in checks:
        v = _ratio(results, sc, k, p)
        if v is None:
            continue
        met = v < limit if strict else v <= limit
        row: dict[str, Any] = {"target": desc, "ratio": v, "limit": limit, "met": met}
        if p == NAIVE:
            row["paired"] = paired(results, sc, k, p)
        out.append(row)
    # P1 asks for the ratio to the durable write alone as well (no verdict).
    for k in ("ketter sha256", "ketter xxh128"):
        v = _ratio(results, "a", k, "cp && sync")
        if v is not None:
            out.append(
                {
                    "target": f"P1: 2 GiB {k.split()[1]} ÷ cp && sync (informative, #19)",
                    "ratio": v,
                    "limit": None,
                    "met": None,
                    "paired": paired(results, "a", k, "cp && sync"),
                }
            )
    # What bounds P1: the pipeline's I/O alone (no hash) against the
    # pipeline, and Ketter against that I/O (no verdict).
    for k, p in ((IO_ALONE, NAIVE), ("ketter sha256", IO_ALONE), ("ketter xxh128", IO_ALONE)):
        v = _medians(results, "a", k, p)
        if v is not None:
            out.append(
                {
                    "target": f"P1: {k} ÷ {p} (informative, #19)",
                    "ratio": v,
                    "limit": None,
                    "met": None,
                    "paired": paired(results, "a", k, p),
                }
            )
    # rclone copy --checksum is beaten in every mode.
    for sc, data in results.items():
        rclone = [p for p in data.get("tools", {}) if p.startswith("rclone")]
        peer = min(rclone, key=len) if rclone else None  # the bare command where present
        for kname in data.get("ratios", {}):
            v = _ratio(results, sc, kname, peer) if peer else None
            if v is not None:
                out.append(
                    {
                        "target": f"({sc}) {kname} beats {peer}",
                        "ratio": v,
                        "limit": 1.0,
                        "met": v < 1.0,
                    }
                )
    rss = [
        (sc, n, t["peak_rss_mb"])
        for sc, d in results.items()
        for n, t in d.get("tools", {}).items()
        if t["kind"] == "ketter" and "peak_rss_mb" in t
    ]
    if rss:
        sc, n, mb = max(rss, key=lambda x: x[2])
        out.append(
            {
                "target": "peak RSS of ketter transfer < 100 MB",
                "ratio": None,
                "value_mb": mb,
                "where": f"({sc}) {n}",
                "limit": 100.0,
                "met": mb < 100.0,
            }
        )
    for c in out:
        c["smoke"] = quick
    return out


def target_lines(checks: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | met |", "|---|---:|:---:|"]
    for c in checks:
        got = (
            f"{c['ratio']:.2f}×"
            if c["ratio"] is not None
            else f"{c['value_mb']:.0f} MB ({c['where']})"
        )
        if c.get("paired"):
            pr = c["paired"]
            got += (
                f" (pairs: median {pr['median']:.2f}×,"
                f" {pr['min']:.2f}–{pr['max']:.2f}, n={pr['pairs']})"
            )
        verdict = "—" if c["met"] is None else "✔ met" if c["met"] else "✘ NOT met"
        if c.get("smoke"):
            verdict += " (smoke: --quick sizes)"
        lines.append(f"| {c['target']} | {got} | {verdict} |")
    return lines
