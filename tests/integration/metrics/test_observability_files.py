"""The shipped alert rules and Grafana files: promtool checks and unit-tests
the rules; the dashboard names its datasource by a fixed uid, has no
``__inputs`` (it provisions as it is) and every query reads metrics."""

from __future__ import annotations

import json

import yaml

from tests.integration.metrics.promql import (
    DASHBOARD,
    OBSERVABILITY,
    RULE_TESTS,
    RULES,
    dashboard_expressions,
    metric_names,
    rule_expressions,
    run_promtool,
)

DATASOURCE_UID = "ketter-prometheus"


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 6 rules found" in run_promtool("check", "rules", str(RULES))


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    out = run_promtool("test", "rules", RULE_TESTS.name, cwd=OBSERVABILITY)
    assert "SUCCESS" in out


def test_the_rules_cover_the_six_alerts() -> None:
    names = [name for name, _ in rule_expressions()]
    assert names == [
        "rule KetterVerifyFailure",
        "rule KetterRoutePaused",
        "rule KetterTransferFailed",
        "rule KetterNoHeartbeat",
        "rule KetterStoreLogPinned",
        "rule KetterOldestWaitingJob",
    ]


def test_the_dashboard_uses_one_fixed_datasource_and_no_inputs() -> None:
    text = DASHBOARD.read_text()
    board = json.loads(text)
    assert "__inputs" not in board and "${DS_" not in text
    uids = set()
    for panel in board["panels"]:
        uids.add(panel["datasource"]["uid"])
        uids.update(t["datasource"]["uid"] for t in panel["targets"])
    uids.update(v["datasource"]["uid"] for v in board["templating"]["list"])
    assert uids == {DATASOURCE_UID}
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "throughput",
        "queue depth",
        "failed",
        "retries",
        "verify failures",
        "paused",
        "oldest waiting",
        "heartbeat",
    ):
        assert topic in titles, topic


def test_the_provisioning_names_the_dashboards_datasource() -> None:
    provisioning = OBSERVABILITY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "ketter.yml").read_text())
    assert [s["uid"] for s in sources["datasources"]] == [DATASOURCE_UID]
    assert sources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards" / "ketter.yml").read_text())
    assert providers["providers"][0]["type"] == "file"


def test_every_expression_reads_ketter_metrics() -> None:
    for where, expr in [*dashboard_expressions(), *rule_expressions()]:
        names = metric_names(expr)
        assert names and all(n.startswith("ketter_") for n in names), (where, names)
