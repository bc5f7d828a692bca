"""Disputes: a case file per contested match, and the resolutions that corrected it.

A dispute is opened by a report (from the platform or from staff) and stays
open until a resolution closes it. Resolutions never edit events: they write
reversal events and new outcome events sourced from the resolution row, so
each resolution's events are distinct under the idempotency key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.activity import JsonDocument
from webapp.models.base import Base, BigId, UTCDateTime, utcnow

DISPUTE_STATUSES = ("open", "resolved")
REPORT_SOURCES = ("platform", "staff")
OUTCOMES = ("a", "b", "void")


class Dispute(Base):
    """One case file: a match contested from its first report until it is resolved."""

    __tablename__ = "disputes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("matches.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the match was before it was marked disputed: a forfeit stays a forfeit
    # when its winner is corrected, and an unresolved dispute can be told apart
    # from one reopened on a voided match.
    match_state_before: Mapped[str] = mapped_column(String(16))
    winner_side_before: Mapped[str | None] = mapped_column(String(1))

    __table_args__ = (
        CheckConstraint("status IN ('open', 'resolved')", name="status_known"),
        # One open case per match: further reports join it.
        Index(
            "uq_disputes_open_match",
            "match_id",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        Index("ix_disputes_status_opened_at", "status", "opened_at"),
    )


class DisputeReport(Base):
    """Who said a match result was wrong, and why."""

    __tablename__ = "dispute_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("disputes.id"))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    # The platform's name for the reporter (e.g. a player's public id), as given.
    reporter: Mapped[str | None] = mapped_column(String(100))
    reporter_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    reason: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("source IN ('platform', 'staff')", name="source_known"),
        Index("ix_dispute_reports_dispute_id", "dispute_id"),
    )


class DisputeNote(Base):
    """Evidence or reasoning a staff member added to a case file."""

    __tablename__ = "dispute_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("disputes.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    body: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_dispute_notes_dispute_id", "dispute_id"),)


class DisputeView(Base):
    """A staff member opened the case file."""

    __tablename__ = "dispute_views"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("disputes.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    viewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_dispute_views_dispute_id", "dispute_id"),)


class MatchResolution(Base):
    """A decision on a disputed match: a corrected winner side, or void.

    Keyed on the match version it was based on, so two decisions taken from the
    same view of a match cannot both be stored. The preview shown before
    confirming and the stats before and after are kept as they were.
    """

    __tablename__ = "match_resolutions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("matches.id"))
    dispute_id: Mapped[int] = mapped_column(ForeignKey("disputes.id"))
    outcome: Mapped[str] = mapped_column(String(4))
    reason: Mapped[str] = mapped_column(Text)
    based_on_version: Mapped[int] = mapped_column(Integer)
    # The form's submission token: a double submit finds this row and writes nothing.
    token: Mapped[str] = mapped_column(String(64), unique=True)
    resolved_by_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    resolved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state_before: Mapped[str] = mapped_column(String(16))
    winner_side_before: Mapped[str | None] = mapped_column(String(1))
    state_after: Mapped[str] = mapped_column(String(16))
    winner_side_after: Mapped[str | None] = mapped_column(String(1))
    tournament_result_id: Mapped[int | None] = mapped_column(BigInteger)
    preview: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    stats_before: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    stats_after: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)

    __table_args__ = (
        CheckConstraint("outcome IN ('a', 'b', 'void')", name="outcome_known"),
        UniqueConstraint("match_id", "based_on_version"),
        Index("ix_match_resolutions_dispute_id", "dispute_id"),
    )
