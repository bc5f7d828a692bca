"""Alerts reach a real webhook receiver and a real SMTP server; failed deliveries are retried, never fatal."""

from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, text

from tests.domain.test_recording import won
from webapp.domain import jobs
from webapp.domain.audit import SYSTEM
from webapp.domain.recording import record_event
from webapp.jobs.alerting import check_event_rate, deliver_pending
from webapp.jobs.reconcile import run_reconciliation
from webapp.jobs.runner import execute_run
from webapp.models.jobs import AlertDelivery
from webapp.transaction import unit_of_work


class Mailbox:
    def __init__(self) -> None:
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content.decode())
        return "250 OK"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mailbox(app):
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, ALERT_EMAIL_TO="oncall@ops.test")
    yield box
    controller.stop()
    app.config.update(ALERT_EMAIL_TO="")


def drift_everyone(session, make_player, players=3):
    for n in range(players):
        player = make_player(f"p{n}")
        with unit_of_work(session):
            record_event(session, won(player))
    session.execute(text("UPDATE player_stats SET matches_won = matches_won + 3"))
    session.commit()


def deliveries(session):
    session.rollback()
    return session.scalars(select(AlertDelivery).order_by(AlertDelivery.id)).all()


def test_drift_above_the_threshold_posts_to_the_webhook_and_emails(session, make_player, webhook, mailbox):
    drift_everyone(session, make_player)
    run_reconciliation(session)
    assert len(webhook.received) == 1
    body = webhook.received[0]
    assert "Stats drift above 1% of players" in body["text"] == body["content"]
    assert body["alert"]["details"]["players_drifted"] == 3
    assert len(mailbox.messages) == 1 and "Stats drift" in mailbox.messages[0]
    assert {d.status for d in deliveries(session)} == {"delivered"}


def test_drift_below_the_threshold_alerts_nobody(session, make_player, webhook, app):
    app.config["DRIFT_ALERT_SHARE"] = 0.5
    try:
        make_player("a"), make_player("b"), make_player("c")
        drift_everyone(session, make_player, players=1)
        run_reconciliation(session)
    finally:
        app.config["DRIFT_ALERT_SHARE"] = 0.01
    assert webhook.received == []


def test_a_check_of_one_drifted_player_is_no_share_of_the_platform_and_alerts_nobody(
    session, make_player, webhook
):
    drift_everyone(session, make_player, players=1)
    (drifted,) = session.scalars(text("SELECT DISTINCT player_id FROM player_stats")).all()
    session.rollback()
    outcome = run_reconciliation(session, player_id=drifted)
    assert outcome.report.drifted_share == 1.0
    assert webhook.received == []


def test_the_same_alert_is_not_repeated_within_the_quiet_window(session, make_player, webhook):
    drift_everyone(session, make_player)
    run_reconciliation(session)
    run_reconciliation(session)
    assert len(webhook.received) == 1


def test_a_failed_job_alerts(session, webhook):
    with unit_of_work(session):
        run_id = jobs.queue_run(session, SYSTEM, "backfill", {"batch_size": "not a number"}).id
    run = execute_run(session, run_id)
    assert run.status == "failed"
    assert any(f"backfill run {run_id} failed" in body["text"] for body in webhook.received)


def test_a_failed_delivery_never_breaks_the_job_and_is_retried(session, make_player, webhook):
    webhook.status = 500
    drift_everyone(session, make_player)
    outcome = run_reconciliation(session, fix=True)
    assert outcome.players_fixed == 3, "the job finished its work although the alert failed"
    [delivery] = deliveries(session)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "500" in delivery.last_error
    webhook.status = 200
    assert deliver_pending(session) == 1
    [delivery] = deliveries(session)
    assert delivery.status == "delivered" and delivery.attempts == 2


def test_an_unreachable_webhook_is_given_up_after_the_last_attempt(session, make_player, app):
    app.config.update(ALERT_WEBHOOK_URL="http://127.0.0.1:9/unreachable", ALERT_MAX_ATTEMPTS=2)
    try:
        drift_everyone(session, make_player)
        run_reconciliation(session)
        deliver_pending(session)
        deliver_pending(session)
        [delivery] = deliveries(session)
    finally:
        app.config.update(ALERT_WEBHOOK_URL=None, ALERT_MAX_ATTEMPTS=5)
    assert delivery.status == "failed" and delivery.attempts == 2


def test_event_creation_above_the_rate_alerts(session, make_player, webhook, app):
    app.config["EVENT_RATE_ALERT_PER_MINUTE"] = 2
    try:
        drift_everyone(session, make_player, players=3)
        assert check_event_rate(session) == 3
    finally:
        app.config["EVENT_RATE_ALERT_PER_MINUTE"] = 1000
    assert any("Event creation above 2 per minute" in body["text"] for body in webhook.received)


def test_a_rolled_back_change_never_alerts(session, webhook):
    from webapp.jobs.alerting import raise_alert

    with pytest.raises(RuntimeError):
        with unit_of_work(session):
            raise_alert(session, "drift", "should never be sent")
            raise RuntimeError("the change fails")
    assert webhook.received == []
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AlertDelivery)) == 0
