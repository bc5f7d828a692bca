"""The Prometheus rules and the Grafana dashboard in ops/ name only metrics the app exports."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from flask import url_for
from prometheus_client.parser import text_string_to_metric_families

from tests.domain.test_recording import won
from webapp.config import PROJECT_ROOT
from webapp.domain.recording import record_events
from webapp.domain.timeline import timeline_page
from webapp.transaction import unit_of_work

OPS = PROJECT_ROOT / "ops"
METRIC_NAME = re.compile(r"\b(activity_[a-z0-9_]+)\b")
HISTOGRAM_SAMPLES = ("_bucket", "_sum", "_count")
# The charts of the monitoring overview page (webapp/web/charts.py), by title.
OVERVIEW_PANELS = {
    "Event volume by type",
    "Stats drift per reconciliation run",
    "Reconciliation success rate",
    "Latency of recording and of timeline and feed reads",
    "Backfill progress",
    "Event table size",
}


def alert_rules() -> list[dict]:
    document = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((OPS / "grafana" / "activity-ops.json").read_text())


def expressions() -> list[tuple[str, str]]:
    """Every PromQL expression in ops/, with where it is."""
    found = [(f"rule {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for panel in dashboard()["panels"]:
        found += [(f"panel {panel['title']!r}", target["expr"]) for target in panel["targets"]]
    return found


def without_strings(expr: str) -> str:
    """The expression with its label values blanked, so that only metric names look like them."""
    return re.sub(r'"[^"]*"', '""', expr)


def test_the_rules_cover_every_alert_the_issue_asks_for():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in ("ActivityStatsDriftAboveOnePercent", "ActivityEventRateAboveThousandPerMinute",
                 "ActivityRecordingLatencyP95Above100ms", "ActivityReconciliationFailed",
                 "ActivityReconciliationNotRunFor26Hours", "ActivityEventTableAboveArchivalSize"):
        assert name in rules
    assert "> 0.01" in rules["ActivityStatsDriftAboveOnePercent"]["expr"]
    assert "> 1000" in rules["ActivityEventRateAboveThousandPerMinute"]["expr"]
    assert "histogram_quantile(0.95" in rules["ActivityRecordingLatencyP95Above100ms"]["expr"]
    assert "> 0.1" in rules["ActivityRecordingLatencyP95Above100ms"]["expr"]
    assert "26 * 3600" in rules["ActivityReconciliationNotRunFor26Hours"]["expr"]
    assert "activity_event_table_alert_bytes" in rules["ActivityEventTableAboveArchivalSize"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("page", "warning")
        assert rule["annotations"]["summary"]


def test_the_dashboard_has_the_panels_of_the_overview_page(client, sign_in):
    sign_in("engineer")  # engineers see every chart of the page
    with client.application.test_request_context():
        overview = client.get(url_for("monitoring.index"))
    assert overview.status_code == 200
    charts = set(re.findall(r'<h2 class="h6 mb-0" id="chart-[\w-]+-title">([^<]+)</h2>', overview.text))
    assert charts == OVERVIEW_PANELS
    board = dashboard()
    assert {panel["title"] for panel in board["panels"]} == charts
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", "the data source is chosen on import"
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"])


def test_every_expression_balances_its_brackets_and_quotes():
    pairs = {")": "(", "]": "[", "}": "{"}
    for where, expr in expressions():
        stack = []
        for char in without_strings(expr):
            if char in "([{":
                stack.append(char)
            elif char in pairs:
                assert stack and stack.pop() == pairs[char], f"{where}: unbalanced {char!r} in {expr}"
        assert not stack, f"{where}: unclosed {stack} in {expr}"
        assert expr.count('"') % 2 == 0, f"{where}: unbalanced quotes in {expr}"


@pytest.fixture
def exported_names(session, client, app, make_player):
    """Names a scrape exposes after known activity, as PromQL would name its series."""
    previous = app.config.get("METRICS_TOKEN")
    app.config["METRICS_TOKEN"] = "ops-test-token"
    try:
        alice = make_player("alice")
        with unit_of_work(session):
            record_events(session, [won(alice, 1)])
        timeline_page(session, alice.id)
        response = client.get("/metrics", headers={"Authorization": "Bearer ops-test-token"})
    finally:
        app.config["METRICS_TOKEN"] = previous
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.text):
        names.update(sample.name for sample in family.samples)
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_metric_named_in_ops_is_one_the_app_exports(exported_names):
    named = {(where, name) for where, expr in expressions()
             for name in METRIC_NAME.findall(without_strings(expr))}
    assert named, "the expressions name no metric at all"
    unknown = sorted(f"{where}: {name}" for where, name in named if name not in exported_names)
    assert unknown == []
    # Histograms are read through their buckets; the families themselves are there too.
    histograms = {name.removesuffix(suffix) for _, name in named for suffix in HISTOGRAM_SAMPLES
                  if name.endswith(suffix)}
    assert histograms <= {"activity_recording_seconds", "activity_feed_query_seconds"}
    assert histograms <= exported_names
