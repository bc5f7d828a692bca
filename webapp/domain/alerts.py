"""Alerts: what is worth telling engineers, and the record of telling them.

An alert becomes one ``AlertDelivery`` row per configured channel (a
Slack/Discord-compatible webhook, email over SMTP). Rows are written in the
caller's transaction, so a rolled-back change never alerts; sending happens
after the commit, outside any transaction, and a failed send is kept pending
and retried until ``max_attempts``, never failing the work that raised it.
"""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from webapp.models.activity import ActivityEvent
from webapp.models.base import utcnow
from webapp.models.jobs import AlertDelivery
from webapp.models.reconciliation import ReconciliationDrift, ReconciliationRun

RULES = ("drift", "job_failed", "event_rate", "volume_drop", "persistent_drift")


@dataclass(frozen=True)
class AlertSettings:
    webhook_url: str | None = None
    email_to: tuple[str, ...] = ()
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_from: str = "activity-ops@localhost"
    max_attempts: int = 5
    timeout_seconds: float = 5.0
    # The same alert (rule and subject) is not raised again within this window.
    quiet_minutes: int = 15
    drift_share: float = 0.01
    event_rate_per_minute: int = 1000
    # A type's live events in the last hour below this fraction of its usual hour
    # (the mean of the same hour over the previous ``volume_baseline_days`` days),
    # once the usual hour holds at least ``volume_min_usual_per_hour`` events.
    volume_drop_fraction: float = 0.2
    volume_min_usual_per_hour: int = 30
    volume_baseline_days: int = 7
    # Drift found by this many whole reconciliation runs in a row.
    drift_persistent_runs: int = 3

    @property
    def channels(self) -> tuple[str, ...]:
        return (("webhook",) if self.webhook_url else ()) + (("email",) if self.email_to else ())


def raise_alert(session: Session, settings: AlertSettings, rule: str, subject: str,
                details: dict[str, Any] | None = None, now: datetime | None = None) -> list[AlertDelivery]:
    """Store deliveries of one alert on every channel; none if it was raised within the quiet window."""
    if rule not in RULES:
        raise ValueError(f"unknown alert rule {rule!r}")
    now = now or utcnow()
    recent = session.scalar(
        select(func.count()).select_from(AlertDelivery).where(
            AlertDelivery.rule == rule,
            AlertDelivery.subject == subject,
            AlertDelivery.created_at >= now - timedelta(minutes=settings.quiet_minutes),
        )
    )
    if recent:
        return []
    payload = {"rule": rule, "subject": subject, "details": details or {}, "raised_at": now.isoformat()}
    deliveries = [
        AlertDelivery(rule=rule, channel=channel, status="pending", attempts=0, subject=subject,
                      payload=payload, created_at=now)
        for channel in settings.channels
    ]
    session.add_all(deliveries)
    session.flush()
    return deliveries


def pending_deliveries(session: Session, settings: AlertSettings) -> list[AlertDelivery]:
    """Deliveries still to be sent, oldest first."""
    return list(
        session.scalars(
            select(AlertDelivery)
            .where(AlertDelivery.status == "pending", AlertDelivery.attempts < settings.max_attempts)
            .order_by(AlertDelivery.id)
        )
    )


def record_attempt(session: Session, settings: AlertSettings, delivery_id: int, error: str | None) -> AlertDelivery:
    """Note one send attempt: delivered, or still pending (failed after the last attempt)."""
    delivery = session.get(AlertDelivery, delivery_id)
    delivery.attempts += 1
    if error is None:
        delivery.status = "delivered"
        delivery.delivered_at = utcnow()
        delivery.last_error = None
    else:
        delivery.last_error = error
        if delivery.attempts >= settings.max_attempts:
            delivery.status = "failed"
    session.flush()
    return delivery


def message_text(payload: dict[str, Any]) -> str:
    details = "; ".join(f"{k}: {v}" for k, v in payload.get("details", {}).items())
    return f"[activity-ops] {payload['subject']}" + (f" ({details})" if details else "")


def send(settings: AlertSettings, channel: str, payload: dict[str, Any]) -> None:
    """Send one alert on one channel; raise on any failure."""
    text = message_text(payload)
    if channel == "webhook":
        # "text" is what Slack reads, "content" what Discord reads; "alert" is for machines.
        body = json.dumps({"text": text, "content": text, "alert": payload}).encode()
        request = urllib.request.Request(
            settings.webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=settings.timeout_seconds) as response:
            if response.status >= 300:
                raise RuntimeError(f"webhook answered {response.status}")
    elif channel == "email":
        message = EmailMessage()
        message["Subject"] = f"[activity-ops] {payload['subject']}"
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(settings.email_to)
        message.set_content(text + "\n\n" + json.dumps(payload, indent=2, default=str))
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds) as smtp:
            smtp.send_message(message)
    else:
        raise ValueError(f"unknown channel {channel!r}")


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"webhook answered {exc.code}"
    return f"{type(exc).__name__}: {exc}"


def events_recorded_in_last_minute(session: Session, now: datetime | None = None) -> int:
    """Count events recorded in the minute before ``now``.

    Looks only at the newest ids (recording assigns ids in order), so the cost
    stays bounded however large the table is; a count at the cap is far above
    any alert threshold anyway.
    """
    now = now or utcnow()
    newest = session.scalar(select(func.max(ActivityEvent.id)))
    if newest is None:
        return 0
    recent = (
        select(ActivityEvent.id)
        .where(ActivityEvent.id > newest - 200_000, ActivityEvent.recorded_at >= now - timedelta(minutes=1))
        .subquery()
    )
    return session.scalar(select(func.count()).select_from(recent)) or 0


@dataclass(frozen=True)
class VolumeDrop:
    """An event type whose live volume in the last hour is far below its usual hour."""

    event_type: str
    last_hour: int
    usual_per_hour: float


def volume_drops(session: Session, settings: AlertSettings, now: datetime | None = None) -> list[VolumeDrop]:
    """Find the event types whose live events in the hour before ``now`` fell far below usual.

    The usual level is the mean of the same hour on each of the previous
    ``volume_baseline_days`` days (days without events count as zero, so a
    young installation alerts less, never more). Only ``live`` events count:
    backfills and corrections come in bursts that say nothing about traffic.
    Types whose usual hour is below ``volume_min_usual_per_hour`` are left
    out, so quiet types do not flap.
    """
    now = now or utcnow()
    hour = timedelta(hours=1)
    last_hour = live_events_by_type(session, now - hour, now)
    baseline: dict[str, int] = {}
    days = max(settings.volume_baseline_days, 1)
    for day in range(1, days + 1):
        end = now - timedelta(days=day)
        for event_type, n in live_events_by_type(session, end - hour, end).items():
            baseline[event_type] = baseline.get(event_type, 0) + n
    drops = []
    for event_type, total in sorted(baseline.items()):
        usual = total / days
        seen = last_hour.get(event_type, 0)
        if usual >= settings.volume_min_usual_per_hour and seen < settings.volume_drop_fraction * usual:
            drops.append(VolumeDrop(event_type, seen, usual))
    return drops


def live_events_by_type(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """Count live events recorded in ``[start, end)``, by type, reading only that stretch of the table.

    Recording assigns ids in the order it records, so the events of a time
    window are one range of ids, found by bisecting the primary key; the
    recorded_at condition keeps the count exact where concurrent writers
    interleaved a few milliseconds at the edges.
    """
    # Two statements: SQLite reads min() or max() off the index only when it is alone in the query.
    low = session.scalar(select(func.min(ActivityEvent.id)))
    high = session.scalar(select(func.max(ActivityEvent.id)))
    if low is None:
        return {}
    first = _first_id_recorded_since(session, start, low, high)
    after = _first_id_recorded_since(session, end, first, high)
    if first >= after:
        return {}
    rows = session.execute(
        select(ActivityEvent.event_type, func.count())
        .where(
            ActivityEvent.id >= first,
            ActivityEvent.id < after,
            ActivityEvent.origin == "live",
            ActivityEvent.recorded_at >= start,
            ActivityEvent.recorded_at < end,
        )
        .group_by(ActivityEvent.event_type)
    )
    return {event_type: n for event_type, n in rows}


def _first_id_recorded_since(session: Session, moment: datetime, low: int, high: int) -> int:
    """Return the lowest id from which every event was recorded at or after ``moment`` (``high + 1`` if none).

    Events arrive at a fairly even rate over an hour or a day, so the search
    interpolates the id from the recording times at both ends of the range
    (a handful of probes on millions of rows); every other probe halves the
    range instead, so bursts such as a backfill cost at most twice a bisection.
    """
    lo, hi = low, high + 1
    lo_time = hi_time = None
    interpolate = True
    while lo < hi:
        probe = (lo + hi) // 2
        if interpolate and lo_time is not None and hi_time is not None and hi_time > lo_time:
            share = (moment - lo_time) / (hi_time - lo_time)
            probe = min(max(lo + int(share * (hi - lo)), lo), hi - 1)
        interpolate = not interpolate
        row = session.execute(
            select(ActivityEvent.id, ActivityEvent.recorded_at)
            .where(ActivityEvent.id >= probe)
            .order_by(ActivityEvent.id)
            .limit(1)
        ).first()
        if row is None or row.recorded_at >= moment:
            hi = probe
            hi_time = row.recorded_at if row is not None else hi_time
        else:
            lo = row.id + 1
            lo_time = row.recorded_at
    return lo


@dataclass(frozen=True)
class PersistentDrift:
    """Drift found by each of the latest whole reconciliation runs, oldest first."""

    run_ids: tuple[int, ...]
    players_drifted: tuple[int, ...]
    # Players whose stats drifted in every one of those runs: repairs that do not hold.
    players_in_every_run: int


def persistent_drift(session: Session, runs: int) -> PersistentDrift | None:
    """Return the drift if each of the latest ``runs`` succeeded whole runs found some; else None.

    Runs limited to one player and failed runs (which alert on their own) are
    not part of the sequence.
    """
    if runs < 1:
        return None
    latest = session.execute(
        select(ReconciliationRun.id, ReconciliationRun.players_drifted)
        .where(ReconciliationRun.status == "succeeded", ReconciliationRun.player_id.is_(None))
        .order_by(ReconciliationRun.id.desc())
        .limit(runs)
    ).all()
    if len(latest) < runs or any(run.players_drifted == 0 for run in latest):
        return None
    run_ids = tuple(run.id for run in reversed(latest))
    repeated = (
        select(ReconciliationDrift.player_id)
        .where(ReconciliationDrift.run_id.in_(run_ids))
        .group_by(ReconciliationDrift.player_id)
        .having(func.count(func.distinct(ReconciliationDrift.run_id)) == len(run_ids))
        .subquery()
    )
    return PersistentDrift(
        run_ids=run_ids,
        players_drifted=tuple(run.players_drifted for run in reversed(latest)),
        players_in_every_run=session.scalar(select(func.count()).select_from(repeated)) or 0,
    )
