"""Raising alerts from entrypoints, and sending what is pending.

Settings come from the app's config; sending happens after the commit that
stored the deliveries, outside any transaction, and never raises into the
work that caused the alert.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from webapp.domain import alerts
from webapp.transaction import after_commit, unit_of_work

log = logging.getLogger(__name__)


def settings_from_config(config) -> alerts.AlertSettings:
    """Build alert settings from a Flask config mapping."""
    return alerts.AlertSettings(
        webhook_url=config.get("ALERT_WEBHOOK_URL") or None,
        email_to=tuple(a.strip() for a in (config.get("ALERT_EMAIL_TO") or "").split(",") if a.strip()),
        smtp_host=config.get("SMTP_HOST", "localhost"),
        smtp_port=int(config.get("SMTP_PORT", 25)),
        smtp_from=config.get("SMTP_FROM", "activity-ops@localhost"),
        max_attempts=int(config.get("ALERT_MAX_ATTEMPTS", 5)),
        timeout_seconds=float(config.get("ALERT_TIMEOUT_SECONDS", 5)),
        quiet_minutes=int(config.get("ALERT_QUIET_MINUTES", 15)),
        drift_share=float(config.get("DRIFT_ALERT_SHARE", 0.01)),
        event_rate_per_minute=int(config.get("EVENT_RATE_ALERT_PER_MINUTE", 1000)),
        volume_drop_fraction=float(config.get("VOLUME_DROP_FRACTION", 0.2)),
        volume_min_usual_per_hour=int(config.get("VOLUME_DROP_MIN_USUAL_PER_HOUR", 30)),
        volume_baseline_days=int(config.get("VOLUME_DROP_BASELINE_DAYS", 7)),
        drift_persistent_runs=int(config.get("DRIFT_PERSISTENT_RUNS", 3)),
    )


def current_settings() -> alerts.AlertSettings:
    return settings_from_config(current_app.config)


def raise_alert(session: Session, rule: str, subject: str, details: dict[str, Any] | None = None) -> None:
    """Store an alert in the current unit of work and send it once that commits."""
    settings = current_settings()
    if not settings.channels:
        log.warning("alert not sent, no channel configured: %s", subject)
        return
    if alerts.raise_alert(session, settings, rule, subject, details):
        after_commit(session, lambda: deliver_pending(session, settings))


def raise_alert_now(session: Session, rule: str, subject: str, details: dict[str, Any] | None = None) -> None:
    """Raise an alert in a unit of work of its own (after a failure, when the work was rolled back)."""
    if not current_settings().channels:
        log.warning("alert not sent, no channel configured: %s", subject)
        return
    try:
        with unit_of_work(session):
            raise_alert(session, rule, subject, details)
    except Exception:  # alerting must never turn one failure into two
        log.exception("could not store alert %r", subject)


def deliver_pending(session: Session, settings: alerts.AlertSettings | None = None) -> int:
    """Try to send every pending delivery; return how many were delivered."""
    settings = settings or current_settings()
    session.rollback()
    pending = [(d.id, d.channel, dict(d.payload)) for d in alerts.pending_deliveries(session, settings)]
    session.rollback()
    delivered = 0
    for delivery_id, channel, payload in pending:
        try:
            alerts.send(settings, channel, payload)
            error = None
            delivered += 1
        except Exception as exc:
            error = alerts.describe_failure(exc)
            log.warning("alert delivery %s on %s failed: %s", delivery_id, channel, error)
        try:
            with unit_of_work(session):
                alerts.record_attempt(session, settings, delivery_id, error)
        except Exception:
            log.exception("could not record the outcome of alert delivery %s", delivery_id)
    return delivered


def check_event_rate(session: Session) -> int:
    """Alert when more events were recorded in the last minute than the configured rate."""
    settings = current_settings()
    count = alerts.events_recorded_in_last_minute(session)
    session.rollback()
    if count > settings.event_rate_per_minute:
        raise_alert_now(session, "event_rate", f"Event creation above {settings.event_rate_per_minute:,} per minute",
                        {"events_last_minute": count})
    return count


def check_event_volume(session: Session, now: datetime | None = None) -> list[alerts.VolumeDrop]:
    """Alert for every event type whose live volume in the last hour fell far below its usual hour."""
    settings = current_settings()
    drops = alerts.volume_drops(session, settings, now)
    session.rollback()
    for drop in drops:
        raise_alert_now(
            session,
            "volume_drop",
            f"{drop.event_type} events far below their usual hourly volume",
            {
                "event_type": drop.event_type,
                "last_hour": drop.last_hour,
                "usual_per_hour": round(drop.usual_per_hour, 1),
                "baseline_days": settings.volume_baseline_days,
            },
        )
    return drops


def check_persistent_drift(session: Session) -> alerts.PersistentDrift | None:
    """Alert when drift was found by each of the configured number of latest reconciliation runs."""
    runs = current_settings().drift_persistent_runs
    found = alerts.persistent_drift(session, runs)
    session.rollback()
    if found is not None:
        raise_alert_now(
            session,
            "persistent_drift",
            f"Stats drift found by {runs} reconciliation runs in a row",
            {
                "reconciliation_runs": ", ".join(map(str, found.run_ids)),
                "players_drifted": ", ".join(map(str, found.players_drifted)),
                "players_in_every_run": found.players_in_every_run,
            },
        )
    return found
