"""/metrics: the Prometheus exposition after known activity, summed over worker processes, and who may read it."""

from __future__ import annotations

import multiprocessing
import os
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text, update

from tests.domain.test_recording import won
from webapp import gunicorn_conf
from webapp.domain import alerts
from webapp.domain.privacy import Viewer
from webapp.domain.recording import record_events
from webapp.domain.timeline import feed_page
from webapp.jobs.reconcile import run_reconciliation
from webapp.models.jobs import JobRun
from webapp.models.stats import PlayerStats
from webapp.telemetry import EXPORTED_METRICS
from webapp.transaction import unit_of_work

TOKEN = "scrape-token-for-tests"


@pytest.fixture
def metrics_config(app):
    keys = ("METRICS_TOKEN", "METRICS_ALLOW_FROM", "PROMETHEUS_MULTIPROC_DIR")
    previous = {key: app.config.get(key) for key in keys}
    app.config.update(METRICS_TOKEN=None, METRICS_ALLOW_FROM="", PROMETHEUS_MULTIPROC_DIR=None)
    yield app.config
    app.config.update(previous)


def scrape(client) -> dict:
    """Scrape with the token; return {(sample name, sorted labels): value} and the families."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    return SimpleNamespace(samples=samples, families=families, text=response.text)


def value(scraped, name, **labels) -> float:
    return scraped.samples.get((name, tuple(sorted(labels.items()))), 0.0)


# Access


def test_without_a_token_or_allow_list_the_endpoint_does_not_exist(client, metrics_config):
    assert client.get("/metrics").status_code == 404


def test_a_token_is_required_when_configured(client, metrics_config):
    metrics_config["METRICS_TOKEN"] = TOKEN
    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    basic = client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    right = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (missing.status_code, wrong.status_code, basic.status_code) == (401, 401, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "activity_events_recorded_total" not in wrong.text
    assert right.status_code == 200
    assert right.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "activity_events_recorded_total" in right.text


def test_an_allow_list_admits_only_its_networks(client, metrics_config):
    metrics_config["METRICS_ALLOW_FROM"] = "10.0.0.0/8, 2001:db8::/32"
    inside = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    inside_v6 = client.get("/metrics", environ_base={"REMOTE_ADDR": "2001:db8::7"})
    mapped = client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:10.1.2.3"})
    outside = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.168.1.9"})
    assert (inside.status_code, inside_v6.status_code, mapped.status_code) == (200, 200, 200)
    assert outside.status_code == 403
    assert "activity_" not in outside.text


def test_with_both_either_the_token_or_the_network_is_enough(client, metrics_config):
    metrics_config.update(METRICS_TOKEN=TOKEN, METRICS_ALLOW_FROM="10.0.0.0/8")
    outside = {"REMOTE_ADDR": "192.168.1.9"}
    assert client.get("/metrics", environ_base=outside).status_code == 401
    assert client.get("/metrics", environ_base=outside,
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 200


def test_metrics_need_no_staff_session_and_only_read(client, metrics_config):
    metrics_config["METRICS_TOKEN"] = TOKEN
    response = client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 405
    assert "Set-Cookie" not in client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).headers


def test_a_malformed_allow_list_stops_the_app_at_start():
    from tests.conftest import make_app

    with pytest.raises(ValueError, match="'10.0.0.300/8' is not an address or CIDR network"):
        make_app("sqlite:///:memory:", METRICS_ALLOW_FROM="10.0.0.300/8")


# Values after known activity


def test_every_metric_family_is_exported_with_its_type(client, metrics_config):
    metrics_config["METRICS_TOKEN"] = TOKEN
    scraped = scrape(client)
    exported = {
        (name + "_total" if family.type == "counter" else name): family.type
        for name, family in scraped.families.items()
    }
    assert exported == EXPORTED_METRICS


def test_recording_is_counted_by_type_and_origin_once_committed(session, client, metrics_config, make_player):
    metrics_config["METRICS_TOKEN"] = TOKEN
    alice, bob = make_player("alice"), make_player("bob")
    before = scrape(client)

    with unit_of_work(session):
        record_events(session, [won(alice, 1), won(alice, 1), won(bob, 2, origin="backfill", origin_id=7)])
    with pytest.raises(RuntimeError), unit_of_work(session):
        record_events(session, [won(alice, 3)])
        raise RuntimeError("the request failed after recording")
    with unit_of_work(session):
        record_events(session, [won(alice, 1, metadata={"round": "F", "side": "b", "opponent_player_ids": [5]})])

    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("activity_events_recorded_total", event_type="match_won", origin="live") == 1
    assert delta("activity_events_recorded_total", event_type="match_won", origin="backfill") == 1
    assert delta("activity_events_duplicates_total", event_type="match_won", origin="live") == 1
    assert delta("activity_events_conflicts_total", event_type="match_won") == 1
    assert delta("activity_events_recorded_total", event_type="match_lost", origin="live") == 0
    # Latency counts every recording that finished, committed or not.
    assert delta("activity_recording_seconds_count") == 3
    assert delta("activity_recording_seconds_sum") > 0
    assert delta("activity_recording_seconds_bucket", le="+Inf") == 3


def test_feed_and_timeline_reads_are_timed(session, client, metrics_config, make_player):
    metrics_config["METRICS_TOKEN"] = TOKEN
    alice = make_player("alice")
    with unit_of_work(session):
        record_events(session, [won(alice, 1)])
    before = scrape(client)

    feed_page(session, alice, Viewer.owner(alice.id))
    feed_page(session, alice, Viewer.owner(alice.id))

    after = scrape(client)
    assert value(after, "activity_feed_query_seconds_count", query="feed") - value(
        before, "activity_feed_query_seconds_count", query="feed") == 2
    assert value(after, "activity_feed_query_seconds_count", query="timeline") > value(
        before, "activity_feed_query_seconds_count", query="timeline")
    family = after.families["activity_feed_query_seconds"]
    assert {s.labels["query"] for s in family.samples} == {"feed", "timeline"}


def test_database_figures_are_read_when_scraped(session, client, metrics_config, make_player, app):
    metrics_config["METRICS_TOKEN"] = TOKEN
    alice, bob = make_player("alice"), make_player("bob")
    with unit_of_work(session):
        record_events(session, [won(alice, 1), won(bob, 2)])
    with unit_of_work(session):
        session.execute(update(PlayerStats).where(PlayerStats.player_id == alice.id)
                        .values(matches_won=PlayerStats.matches_won + 4))
    run_reconciliation(session)
    with unit_of_work(session):
        job = JobRun(kind="backfill", status="running", progress_done=40, progress_total=100, params={})
        session.add(JobRun(kind="archive", status="succeeded", progress_done=9, params={}))
        session.add(job)
        settings = alerts.AlertSettings(webhook_url="http://127.0.0.1:9/hook", email_to=("oncall@ops.test",))
        alerts.raise_alert(session, settings, "drift", "drift seen")
        [delivered, _email] = alerts.raise_alert(session, settings, "event_rate", "many events")
        alerts.record_attempt(session, settings, delivered.id, None)
    if backend_of(session) == "postgresql":
        with unit_of_work(session):
            session.execute(text("ANALYZE activity_events"))
            session.execute(text("ANALYZE player_stats"))

    scraped = scrape(client)

    assert value(scraped, "activity_metrics_database_up") == 1
    assert value(scraped, "activity_reconciliation_runs_total", status="succeeded") == 1
    assert value(scraped, "activity_reconciliation_runs_total", status="failed") == 0
    assert value(scraped, "activity_reconciliation_runs_total", status="cancelled") == 0
    assert value(scraped, "activity_reconciliation_drifted_players") == 1
    assert value(scraped, "activity_reconciliation_checked_players") == 2
    assert value(scraped, "activity_reconciliation_last_finished_timestamp_seconds", status="succeeded") > 0
    assert value(scraped, "activity_job_progress_done", kind="backfill", job_id=str(job.id)) == 40
    assert value(scraped, "activity_job_progress_total", kind="backfill", job_id=str(job.id)) == 100
    assert [s.labels["kind"] for s in scraped.families["activity_job_progress_done"].samples] == ["backfill"], \
        "only running jobs show progress"
    assert value(scraped, "activity_table_rows", table="activity_events") == 2
    assert value(scraped, "activity_table_rows", table="player_stats") == 4
    assert value(scraped, "activity_table_bytes", table="activity_events") > 0
    assert value(scraped, "activity_event_table_alert_bytes") == app.config["EVENT_TABLE_ALERT_BYTES"]
    deliveries = {(s.labels["rule"], s.labels["channel"], s.labels["status"]): s.value
                  for s in scraped.families["activity_alert_deliveries"].samples}
    assert deliveries == {
        ("drift", "email", "pending"): 1, ("drift", "webhook", "pending"): 1,
        ("event_rate", "email", "pending"): 1, ("event_rate", "webhook", "delivered"): 1,
    }


def test_a_database_that_does_not_answer_is_reported_beside_the_process_metrics(metrics_config, app):
    from tests.conftest import make_app

    broken = make_app("postgresql+psycopg://postgres@127.0.0.1:9/nowhere" if backend_of_app(app) == "postgresql"
                      else "sqlite:////nonexistent-dir/never.sqlite3", METRICS_TOKEN=TOKEN)
    response = broken.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "activity_metrics_database_up 0.0" in response.text
    assert "activity_recording_seconds_count" in response.text


def backend_of(session) -> str:
    return session.get_bind().dialect.name


def backend_of_app(app) -> str:
    return "postgresql" if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql") else "sqlite"


# Several worker processes


def _worker_records(database_url: str, player_id: int, sources: list[int]) -> None:
    """In a fresh process that writes its metrics to PROMETHEUS_MULTIPROC_DIR, record one batch."""
    from tests.conftest import T0, make_app
    from webapp.domain.recording import NewEvent
    from webapp.extensions import db

    assert os.environ["PROMETHEUS_MULTIPROC_DIR"]
    app = make_app(database_url)
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            record_events(session, [
                NewEvent(player_id=player_id, event_type="match_won", occurred_at=T0,
                         source_model="match", source_id=source,
                         metadata={"round": "R1", "side": "a", "opponent_player_ids": []})
                for source in sources
            ])
        db.session.remove()
        db.engine.dispose()


def test_counts_from_several_worker_processes_are_summed(app, client, metrics_config, make_player, tmp_path,
                                                         monkeypatch):
    alice, bob = make_player("alice"), make_player("bob")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    context = multiprocessing.get_context("spawn")
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    workers = [
        context.Process(target=_worker_records, args=(url, alice.id, [1, 2, 3])),
        context.Process(target=_worker_records, args=(url, bob.id, [4, 5, 6, 7])),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(list(tmp_path.glob("counter_*.db"))) == 2, "each worker wrote its own file"

    metrics_config.update(METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    scraped = scrape(client)

    assert value(scraped, "activity_events_recorded_total", event_type="match_won", origin="live") == 7
    assert value(scraped, "activity_recording_seconds_count") == 2
    assert value(scraped, "activity_events_recorded_total", event_type="match_lost", origin="live") == 0
    # The database's figures are read once, by the process answering, never summed.
    assert value(scraped, "activity_metrics_database_up") == 1


def test_gunicorn_hooks_empty_the_directory_at_start_and_forget_dead_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_111.db").write_bytes(b"stale")
    gunicorn_conf.on_starting(server=None)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "gauge_livesum_222.db").write_bytes(b"")
    (tmp_path / "counter_222.db").write_bytes(b"")
    gunicorn_conf.child_exit(server=None, worker=SimpleNamespace(pid=222))
    assert [p.name for p in tmp_path.iterdir()] == ["counter_222.db"]
