"""Activity events: the immutable facts every player stat is derived from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, UTCDateTime, utcnow

ORIGINS = ("live", "backfill", "dispute", "staff")

JsonDocument = JSON().with_variant(JSONB(), "postgresql")


class ActivityEvent(Base):
    """One thing that happened to one player.

    Rows are append-only: application code inserts them and never updates them.
    The only deletions are the rollback of a backfill run, archival to cold
    storage and GDPR erasure, each of which adjusts stats to match.

    ``details`` (the ``metadata`` column) refers to other players, teams and
    tournaments by id only, so names are looked up when shown and renames,
    redaction and erasure reach all history without rewriting it.
    """

    __tablename__ = "activity_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"))
    event_type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The platform record the event was derived from, e.g. ("match", 812).
    source_model: Mapped[str] = mapped_column(String(40))
    source_id: Mapped[int] = mapped_column(BigInteger)
    # How the event came to be, and which backfill run / dispute / staff member made it.
    origin: Mapped[str] = mapped_column(String(16))
    origin_id: Mapped[int | None] = mapped_column(BigInteger)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    tournament_id: Mapped[int | None] = mapped_column(ForeignKey("tournaments.id"))
    # Events of private tournaments never reach public-scope stats or other players' feeds.
    is_private: Mapped[bool] = mapped_column(Boolean, default=False)
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDocument, default=dict)
    reverses_event_id: Mapped[int | None] = mapped_column(ForeignKey("activity_events.id"))

    __table_args__ = (
        # The idempotency key. The source alone is not enough: every member of a
        # winning team gets a match_won from the same match.
        UniqueConstraint("player_id", "event_type", "source_model", "source_id"),
        CheckConstraint(
            "origin IN ('live', 'backfill', 'dispute', 'staff')", name="origin_known"
        ),
        # Timelines read newest first with keyset pagination on (occurred_at, id).
        Index("ix_activity_events_player_timeline", "player_id", "occurred_at", "id"),
        # An event is undone at most once; partial, so ordinary events never touch it.
        Index(
            "uq_activity_events_reverses_event_id",
            "reverses_event_id",
            unique=True,
            postgresql_where=text("reverses_event_id IS NOT NULL"),
            sqlite_where=text("reverses_event_id IS NOT NULL"),
        ),
        # Ids follow the recording order and are never handed out twice, also
        # after the newest events were deleted (the monitoring fold counts by id).
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<ActivityEvent {self.id} {self.event_type} player={self.player_id}>"


class DataQualityFinding(Base):
    """Something recorded that disagreed with what was already stored.

    Today the only kind is ``event_conflict``: a fact with the idempotency key of
    a stored event but a different payload. The stored event stands; the
    attempted payload is kept here for staff to review.
    """

    __tablename__ = "data_quality_findings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event_id: Mapped[int] = mapped_column(ForeignKey("activity_events.id"))
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"))
    attempted: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    # The same conflicting submission seen twice is one finding, not two.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    differences: Mapped[list[str]] = mapped_column(JsonDocument)
