"""The monitoring overview: who sees which chart, what each chart endpoint serves, and bad ranges."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import plotly.graph_objects as go
import pytest

from tests.domain.test_recording import won
from webapp.domain import monitoring
from webapp.domain.recording import record_events
from webapp.models import JobRun
from webapp.models.base import utcnow
from webapp.models.jobs import BackfillBatch
from webapp.models.reconciliation import ReconciliationRun
from webapp.models.staff import ROLES
from webapp.transaction import unit_of_work
from webapp.web.admin.monitoring import ENGINEERING_ROLES
from webapp.web.charts import CHARTS

PAGE = "/admin/monitoring/"
HX = {"HX-Request": "true"}
EVERYONE_CHARTS = {name for name, spec in CHARTS.items() if not spec.engineering}
ENGINEERING_CHARTS = {name for name, spec in CHARTS.items() if spec.engineering}


def chart_url(name: str, range_: str | None = None) -> str:
    return f"/admin/monitoring/chart/{name}" + (f"?range={range_}" if range_ else "")


def charts_on(html: str) -> set[str]:
    return set(re.findall(r'data-chart="([a-z]+)"', html))


def figure_of(html: str) -> dict:
    found = re.search(r'<script type="application/json" data-plotly-figure>(.*?)</script>', html, re.DOTALL)
    assert found, "no figure JSON in the chart"
    return json.loads(found.group(1))


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def table_rows(html: str) -> list[list[str]]:
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.DOTALL).group(1)
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)]


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_volume_and_drift_and_only_engineers_see_everything(client, sign_in, role):
    sign_in(role)

    response = client.get(PAGE)

    assert response.status_code == 200
    expected = set(CHARTS) if role in ENGINEERING_ROLES else EVERYONE_CHARTS
    assert charts_on(response.text) == expected
    assert "vendor/plotly.min.js" in response.text and "js/monitoring.js" in response.text
    for name in ENGINEERING_CHARTS:
        status = client.get(chart_url(name)).status_code
        assert status == (200 if role in ENGINEERING_ROLES else 403), name
    for name in EVERYONE_CHARTS:
        assert client.get(chart_url(name)).status_code == 200, name


def test_signed_out_visitors_are_sent_to_sign_in(client):
    for url in (PAGE, chart_url("volume")):
        response = client.get(url)
        assert response.status_code == 302 and "/auth/sign-in" in response.headers["Location"]


@pytest.mark.parametrize("range_", ["24h", "30d", "90d"])
def test_each_chart_endpoint_serves_a_valid_plotly_figure_and_a_table(client, sign_in, range_):
    sign_in("engineer")
    for name in CHARTS:
        response = client.get(chart_url(name, range_), headers=HX)

        assert response.status_code == 200, name
        assert "<html" not in response.text
        go.Figure(figure_of(response.text))  # plotly's own validation raises on a bad figure
        assert 'data-testid="chart-table"' in response.text and "<caption>" in response.text
        assert f"range={range_}" in response.text  # refreshes stay on the same range


@pytest.mark.parametrize("url", [PAGE + "?range=1y", chart_url("volume", "forever"), chart_url("size", "7")])
def test_an_unknown_range_is_a_400_that_names_the_ranges_there_are(client, sign_in, url):
    sign_in("engineer")

    for headers in ({}, HX):
        response = client.get(url, headers=headers)
        assert response.status_code == 400
        assert "range must be one of 24h, 30d, 90d" in response.text


def test_an_unknown_chart_is_404(client, sign_in):
    sign_in("admin")
    assert client.get(chart_url("weather")).status_code == 404


def test_switching_range_with_htmx_returns_only_the_charts_block(client, sign_in):
    sign_in("viewer")

    response = client.get(PAGE + "?range=90d", headers=HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="monitoring-charts"')
    assert 'data-range="90d"' in response.text and "Last 90 days, by day" in response.text
    assert "HX-Request" in response.headers["Vary"]


def test_the_volume_chart_counts_what_was_recorded_by_type(session, client, sign_in, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    with unit_of_work(session):
        record_events(session, [won(alice, source_id=1), won(bob, source_id=1),
                                won(alice, event_type="match_lost", source_id=2)])
    with unit_of_work(session):
        monitoring.fold_event_volume(session, now=utcnow() + timedelta(hours=1))
    sign_in("viewer")

    for range_ in ("24h", "30d"):
        html = client.get(chart_url("volume", range_)).text
        figure = figure_of(html)
        assert {trace["name"]: sum(trace["y"]) for trace in figure["data"]} == {"match_won": 2, "match_lost": 1}
        assert all(trace["stackgroup"] == "volume" for trace in figure["data"])
        rows = table_rows(html)
        assert len(rows) == 1 and rows[0][1:] == ["2", "1", "3"]


def test_the_drift_chart_shows_each_run_with_its_rolling_week_average(session, client, sign_in):
    now = utcnow()
    with unit_of_work(session):
        # Staff stopped the run 4 days ago: neither a success nor a failure of the system.
        for days_ago, drifted, status in ((9, 10, "succeeded"), (4, 0, "cancelled"), (3, 4, "succeeded"),
                                          (2, 0, "failed"), (1, 2, "succeeded")):
            session.add(ReconciliationRun(started_at=now - timedelta(days=days_ago), status=status,
                                          finished_at=now - timedelta(days=days_ago) + timedelta(minutes=5),
                                          players_checked=100, players_drifted=drifted))
    sign_in("trust_safety")

    rows = table_rows(client.get(chart_url("drift", "30d")).text)
    # Newest first: the run 1 day ago averages itself with the run 3 days ago; the one 9 days ago stands alone.
    assert [(r[3], r[4]) for r in rows] == [("2", "3.0"), ("4", "7.0"), ("10", "10.0")]

    html = client.get(chart_url("reconciliation", "30d")).text
    assert "Success rate in range: <strong>75.0 %</strong>" in html
    assert [r[1:] for r in table_rows(html)][1] == ["0", "1", "0.0"]


def test_the_backfill_gauge_shows_events_created_of_expected_with_time_left(session, client, sign_in):
    now = utcnow()
    with unit_of_work(session):
        run = JobRun(kind="backfill", status="running", started_at=now - timedelta(seconds=100),
                     progress_done=250, progress_total=1000)
        session.add(run)
        session.flush()
        session.add(BackfillBatch(run_id=run.id, batch_no=1, events_inserted=500, started_at=now))
    sign_in("engineer")

    html = client.get(chart_url("backfill")).text

    [row] = table_rows(html)
    assert row[:4] == [str(run.id), "500", "2,000", "25.0"]
    assert row[5].endswith("m") or "m " in row[5]
    assert figure_of(html)["data"][0]["type"] == "indicator"


def test_the_backfill_gauge_of_a_resumed_run_measures_its_current_attempt_only(session):
    """Stopped for the peak window, resumed 23 h later: 10 min back in, it has 1.5 h to go."""
    now = utcnow()
    with unit_of_work(session):
        run = JobRun(kind="backfill", status="running",
                     started_at=now - timedelta(hours=23, minutes=10),
                     attempt_started_at=now - timedelta(minutes=10), attempt_done_from=500,
                     progress_done=550, progress_total=1000, params={"expected_events": 2000})
        session.add(run)
        session.flush()
        session.add(BackfillBatch(run_id=run.id, batch_no=1, events_inserted=1000,
                                  started_at=now - timedelta(hours=23, minutes=9)))
        session.add(BackfillBatch(run_id=run.id, batch_no=2, events_inserted=100,
                                  started_at=now - timedelta(minutes=9)))

    [gauge] = monitoring.backfill_gauges(session, now=now)

    assert gauge.events_created == 1100
    assert gauge.events_per_second == pytest.approx(100 / 600)
    assert gauge.seconds_left == pytest.approx(90 * 60)


def test_the_size_chart_shows_rows_bytes_and_the_archival_threshold(app, session, client, sign_in, make_player,
                                                                    monkeypatch):
    monkeypatch.setitem(app.config, "EVENT_TABLE_ALERT_BYTES", 10 * 1024**3)
    alice = make_player("alice")
    with unit_of_work(session):
        record_events(session, [won(alice, source_id=n) for n in range(1, 4)])
    with unit_of_work(session):
        monitoring.fold_event_volume(session, now=utcnow() + timedelta(hours=1))
    sign_in("admin")

    html = client.get(chart_url("size")).text

    rows = dict(table_rows(html))
    assert rows["Rows in the hot table"].startswith("3")
    assert rows["Archival alert threshold"] == "10.0 GiB"
    gauge = figure_of(html)["data"][0]
    assert gauge["gauge"]["threshold"]["value"] == 10 and gauge["number"]["suffix"] == " GiB"
    assert 0 < gauge["value"] < 1


def test_latency_of_recording_reaches_the_chart_once_the_recorder_flushes(app, session, client, sign_in,
                                                                           make_player):
    alice = make_player("alice")
    for n in range(1, 6):
        with unit_of_work(session):
            record_events(session, [won(alice, source_id=n)])
    assert app.extensions["latency_recorder"].flush() >= 5
    sign_in("engineer")

    html = client.get(chart_url("latency", "24h")).text

    # The process's recorder may also hold timings of earlier tests: at least ours are there.
    recording = [[number(cell) for cell in row[2:]] for row in table_rows(html) if row[1] == "Recording events"]
    assert sum(count for count, *_ in recording) >= 5
    assert all(p50 <= p95 <= p99 for _count, p50, p95, p99 in recording)
    names = {trace["name"] for trace in figure_of(html)["data"]}
    assert {"Recording events P50", "Recording events P95", "Recording events P99"} <= names


def test_a_day_timed_alone_is_drawn_as_a_point_on_the_latency_chart(app, session, client, sign_in, make_player):
    alice = make_player("alice")
    with unit_of_work(session):
        record_events(session, [won(alice, source_id=1)])
    assert app.extensions["latency_recorder"].flush() >= 1
    sign_in("engineer")

    html = client.get(chart_url("latency", "30d")).text

    traces = [t for t in figure_of(html)["data"] if t["name"].startswith("Recording events")]
    assert traces
    for trace in traces:
        # One timed day between untimed ones: a line alone would draw nothing.
        assert "markers" in trace["mode"], trace["name"]
        assert sum(value is not None for value in trace["y"]) >= 1
