"""Every link between the project's Markdown documents points at a file
that exists and, when it names a heading, at a heading that exists (the
anchors as GitHub and most renderers make them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("*.md"), *ROOT.glob("docs/*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and
    ``_`` dropped, spaces made ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def lines_outside_code(path: Path) -> list[tuple[int, str]]:
    out, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in lines_outside_code(path):
        match = HEADING.match(line)
        if match:
            slug = anchor(match.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def test_the_anchor_of_a_heading_is_githubs() -> None:
    assert anchor("On PostgreSQL: one node, two nodes (issue #18, `--only pg`)") == (
        "on-postgresql-one-node-two-nodes-issue-18---only-pg"
    )
    assert anchor("Session 17: 0.77× over 21 rounds") == "session-17-077-over-21-rounds"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_documents_resolve(doc: Path) -> None:
    broken = []
    for number, line in lines_outside_code(doc):
        for target in LINK.findall(line):
            if "://" in target or target.startswith("mailto:"):
                continue
            path, _, name = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.name}:{number}: {target} (no such file)")
            elif name and file.suffix == ".md" and name not in anchors(file):
                broken.append(f"{doc.name}:{number}: {target} (no such heading)")
    assert broken == []
