"""The last words of ``make bench``: every goal of the run, one table.

``benchmarks/run.py`` works the goals out (``report.targets``: the issues'
ratios, P1 and P2 of #19 among them) and keeps them in its results file;
``benchmarks/shares.py`` runs after it and prints its own figures, so the
table is printed again here, last, with where it comes from.

    .venv/bin/python benchmarks/goals.py [var/bench/results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import report

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else REPO / "var" / "bench" / "results.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"bench goals: no {path}; run benchmarks/run.py first") from None
    checks = doc.get("targets", [])
    print(
        f"\n## Goals (make bench of {doc.get('generated', '?')}, commit {doc.get('git', '?')}, "
        f"{doc.get('rounds', '?')} rounds, {doc.get('source', '?')} source)\n"
    )
    if not checks:
        print("no goal measured (no scenario with a goal ran)")
        return 0
    print("\n".join(report.target_lines(checks)))
    verdicts = [c for c in checks if c["met"] is not None]  # not the informative rows
    met = sum(1 for c in verdicts if c["met"])
    print(f"\n{met} of {len(verdicts)} met; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
