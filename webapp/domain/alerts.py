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

RULES = ("drift", "job_failed", "event_rate")


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
