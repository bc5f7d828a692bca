"""Counts of what the database holds, for the CLI summary and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from webapp.models import (
    ActivityEvent,
    DataQualityFinding,
    Match,
    Player,
    Registration,
    Team,
    Tournament,
)
from webapp.models.reconciliation import ReconciliationRun


@dataclass(frozen=True)
class DatabaseSummary:
    records: dict[str, int]
    events_by_type: dict[str, int]
    last_reconciliation: ReconciliationRun | None


def database_summary(session: Session) -> DatabaseSummary:
    """Count platform records and events, and find the latest reconciliation run."""
    records = {
        label: session.scalar(select(func.count()).select_from(model)) or 0
        for label, model in (
            ("players", Player),
            ("teams", Team),
            ("tournaments", Tournament),
            ("registrations", Registration),
            ("matches", Match),
            ("data-quality findings", DataQualityFinding),
        )
    }
    events_by_type = {
        event_type: count
        for event_type, count in session.execute(
            select(ActivityEvent.event_type, func.count())
            .group_by(ActivityEvent.event_type)
            .order_by(ActivityEvent.event_type)
        )
    }
    last = session.scalars(
        select(ReconciliationRun).order_by(ReconciliationRun.id.desc()).limit(1)
    ).first()
    return DatabaseSummary(records, events_by_type, last)
