"""Anomalies beside the thresholds reach the real webhook receiver: a type's hourly volume
falling far below its usual level, and drift that survives consecutive reconciliation runs."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from tests.domain.test_recording import won
from tests.jobs.test_alerts import deliveries, drift_everyone
from webapp.domain.alerts import live_events_by_type, volume_drops
from webapp.domain.recording import record_events
from webapp.jobs.alerting import check_event_volume, current_settings
from webapp.jobs.reconcile import run_reconciliation
from webapp.models.activity import ActivityEvent
from webapp.models.base import utcnow
from webapp.models.stats import PlayerStats
from webapp.transaction import unit_of_work

NOW = utcnow().replace(minute=30, second=0, microsecond=0)
_sources = itertools.count(1)


@pytest.fixture
def anomaly_settings(app):
    previous = {key: app.config.get(key) for key in (
        "VOLUME_DROP_MIN_USUAL_PER_HOUR", "VOLUME_DROP_BASELINE_DAYS", "VOLUME_DROP_FRACTION",
        "DRIFT_PERSISTENT_RUNS")}
    app.config.update(VOLUME_DROP_MIN_USUAL_PER_HOUR=5, VOLUME_DROP_BASELINE_DAYS=3,
                      VOLUME_DROP_FRACTION=0.2, DRIFT_PERSISTENT_RUNS=3)
    yield app.config
    app.config.update(previous)


def record_at(session, player, when, n, event_type="match_won", origin="live"):
    """Record ``n`` events now, then date their recording ``when``, as if recorded then.

    Called oldest first, so ids keep following recording time as they do in production.
    """
    with unit_of_work(session):
        first_new = (session.scalar(select(func.max(ActivityEvent.id))) or 0) + 1
        record_events(session, [won(player, next(_sources), event_type=event_type, origin=origin)
                                for _ in range(n)])
        session.execute(update(ActivityEvent).where(ActivityEvent.id >= first_new).values(recorded_at=when))


def usual_days(session, player, per_hour=10, days=3, **kwargs):
    for day in range(days, 0, -1):
        record_at(session, player, NOW - timedelta(days=day, minutes=20), per_hour, **kwargs)


def test_a_type_that_stops_being_recorded_alerts_through_the_webhook(session, make_player, webhook,
                                                                     anomaly_settings):
    alice = make_player("alice")
    usual_days(session, alice, per_hour=10)
    record_at(session, alice, NOW - timedelta(hours=5), 10)  # busy earlier today, silent in the last hour

    drops = check_event_volume(session, now=NOW)

    assert [(d.event_type, d.last_hour, d.usual_per_hour) for d in drops] == [("match_won", 0, 10.0)]
    [body] = webhook.received
    assert "match_won events far below their usual hourly volume" in body["text"]
    assert body["alert"]["rule"] == "volume_drop"
    assert body["alert"]["details"] == {"event_type": "match_won", "last_hour": 0, "usual_per_hour": 10.0,
                                        "baseline_days": 3}
    assert [(d.rule, d.status) for d in deliveries(session)] == [("volume_drop", "delivered")]


def test_the_hourly_periodic_task_runs_the_check(app, session, make_player, webhook, anomaly_settings):
    task = app.extensions["huey_tasks"].check_event_volume
    assert task.s().validate_datetime(datetime(2026, 11, 24, 3, 5))
    assert not task.s().validate_datetime(datetime(2026, 11, 24, 3, 6))
    alice, now = make_player("alice"), utcnow()
    for day in (3, 2, 1):
        record_at(session, alice, now - timedelta(days=day, minutes=20), 10)

    assert task.call_local() == 1

    assert [body["alert"]["subject"] for body in webhook.received] == [
        "match_won events far below their usual hourly volume"]


def test_a_normal_hour_does_not_alert(session, make_player, webhook, anomaly_settings):
    alice = make_player("alice")
    usual_days(session, alice, per_hour=10)
    record_at(session, alice, NOW - timedelta(minutes=10), 8)

    assert check_event_volume(session, now=NOW) == []
    assert webhook.received == []


def test_a_drop_to_just_above_the_fraction_does_not_alert_and_just_below_does(session, make_player,
                                                                               anomaly_settings):
    alice = make_player("alice")
    usual_days(session, alice, per_hour=10)
    record_at(session, alice, NOW - timedelta(minutes=50), 2)  # 2 is not below 0.2 x 10
    assert volume_drops(session, current_settings(), NOW) == []
    anomaly_settings["VOLUME_DROP_FRACTION"] = 0.25
    assert [d.event_type for d in volume_drops(session, current_settings(), NOW)] == ["match_won"]


def test_quiet_types_and_backfills_do_not_make_an_alert(session, make_player, webhook, anomaly_settings):
    alice = make_player("alice")
    # Usually 3 an hour, under the minimum of 5: a quiet hour says nothing.
    usual_days(session, alice, per_hour=3, event_type="match_lost")
    # A backfill's burst is not traffic, so its absence is not a drop.
    usual_days(session, alice, per_hour=50, origin="backfill")

    assert check_event_volume(session, now=NOW) == []
    assert webhook.received == []


def test_counts_read_only_the_window_asked_for(session, make_player, anomaly_settings):
    alice = make_player("alice")
    record_at(session, alice, NOW - timedelta(hours=3), 4)
    record_at(session, alice, NOW - timedelta(hours=2), 6)
    record_at(session, alice, NOW - timedelta(hours=1, minutes=-1), 7, event_type="match_lost")
    record_at(session, alice, NOW, 1)

    assert live_events_by_type(session, NOW - timedelta(hours=2, minutes=1), NOW) == {
        "match_won": 6, "match_lost": 7}
    assert live_events_by_type(session, NOW - timedelta(hours=4), NOW - timedelta(hours=2)) == {"match_won": 4}
    assert live_events_by_type(session, NOW + timedelta(hours=1), NOW + timedelta(hours=2)) == {}


def test_an_empty_table_has_no_volume_and_no_drop(session, anomaly_settings):
    assert live_events_by_type(session, NOW - timedelta(hours=1), NOW) == {}
    assert check_event_volume(session, now=NOW) == []


def persistent_alerts(received):
    return [body for body in received if body["alert"]["rule"] == "persistent_drift"]


def test_drift_found_by_consecutive_runs_alerts_once_it_persists(session, make_player, webhook,
                                                                 anomaly_settings):
    drift_everyone(session, make_player)
    run_reconciliation(session)
    run_reconciliation(session)
    assert persistent_alerts(webhook.received) == [], "two runs are not yet three"

    run_reconciliation(session)

    [body] = persistent_alerts(webhook.received)
    assert "Stats drift found by 3 reconciliation runs in a row" in body["text"]
    assert body["alert"]["details"]["players_drifted"] == "3, 3, 3"
    assert body["alert"]["details"]["players_in_every_run"] == 3


def test_drift_repaired_between_runs_does_not_persist(session, make_player, webhook, anomaly_settings):
    drift_everyone(session, make_player)
    run_reconciliation(session)
    run_reconciliation(session, fix=True)  # finds the drift, then repairs it
    clean = run_reconciliation(session)
    assert clean.report.drifted_players == []
    with unit_of_work(session):
        session.execute(update(PlayerStats).values(matches_won=PlayerStats.matches_won + 1))
    run_reconciliation(session)

    assert persistent_alerts(webhook.received) == []


def test_runs_for_one_player_are_not_part_of_the_sequence(session, make_player, webhook, anomaly_settings):
    drift_everyone(session, make_player)
    run_reconciliation(session)
    run_reconciliation(session, player_id=session.scalar(select(func.min(ActivityEvent.player_id))))
    run_reconciliation(session)

    assert persistent_alerts(webhook.received) == []
