"""What the observability tests need: promtool (never skipped: CI installs
Debian's ``prometheus``), the metric names of a scrape, and the metric names
a PromQL expression of the shipped dashboard or rules reads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.conftest import ROOT

OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "ketter-dashboard.json"
RULES = OBSERVABILITY / "ketter.rules.yml"
RULE_TESTS = OBSERVABILITY / "ketter.rules.test.yml"


def promtool() -> str:
    """promtool's path; a failure (not a skip) when it is missing."""
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    assert path, "promtool is missing: install Debian's `prometheus` package (.ci/run does)"
    return path


def run_promtool(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    """Run promtool; its output, after checking that it succeeded."""
    result = subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, cwd=cwd, timeout=120
    )
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def check_metrics(body: bytes) -> None:
    """``promtool check metrics`` finds nothing to say about ``body``."""
    out = run_promtool("check", "metrics", stdin=body)
    assert out.strip() == "", out


def samples(body: bytes) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """Sample name → labels → value of a text-format scrape."""
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    pattern = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        match = pattern.match(line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        found.setdefault(name, {})[pairs] = float(value)
    return found


def value(body: bytes, name: str, **labels: str) -> float:
    series = samples(body).get(name, {})
    wanted = frozenset(labels.items())
    matches = [v for k, v in series.items() if wanted <= k]
    assert len(matches) == 1, (name, labels, series)
    return matches[0]


#: Words of PromQL that are not metric names.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` reads (label matchers, ranges, grouping
    lists, strings, numbers, functions and aggregations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an aggregation
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(where, expression) of every query of the dashboard, variables included."""
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in board["templating"]["list"]:
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
        yield f"variable {variable['name']}", inner.group(1) if inner else text


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]
