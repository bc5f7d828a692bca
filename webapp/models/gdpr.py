"""GDPR requests: what a player asked for, how staff verified who asked, and what was done.

A request is about one player. After an erasure the player row stays as an
empty shell (no name, email or public id left) that only the GDPR paperwork
refers to, so the request keeps pointing at it; the erased player's events and
their place in platform records live on under a tombstone player that no
column anywhere links back to.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.models.activity import JsonDocument
from webapp.models.base import Base, BigId, CreatedAtMixin, UTCDateTime, utcnow

REQUEST_KINDS = ("export", "erasure")
# open: received, identity not yet verified; verified: staff recorded how the
# requester's identity was checked; awaiting_approval: an erasure asked for by
# one privacy staff member, waiting for a second; completed / refused: closed.
REQUEST_STATUSES = ("open", "verified", "awaiting_approval", "completed", "refused")
CLOSED_STATUSES = ("completed", "refused")
# Article 12(3): one month to answer; we count 30 days from receipt.
RESPONSE_PERIOD = timedelta(days=30)

ENTRY_KINDS = (
    "opened",
    "note",
    "identity_verified",
    "erasure_requested",
    "erasure_approved",
    "erasure_refused",
    "completed",
    "refused",
    "export",
)


class GdprRequest(CreatedAtMixin, Base):
    __tablename__ = "gdpr_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Never NULL: erasure empties the player row rather than deleting it, so the
    # request, its exports and the audit trail go on naming the same id.
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20), default="open")
    # How staff made sure the requester is the player; nothing runs before it is recorded.
    identity_verification: Mapped[str | None] = mapped_column(Text)
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handled_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    # Erasure takes two people: one asks, a different one approves.
    erasure_requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    erasure_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refusal_reason: Mapped[str | None] = mapped_column(Text)
    # After an erasure: where the erased values were searched for and how many
    # hits each place had (counts only, never the values).
    verification_report: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)

    entries: Mapped[list[GdprRequestEntry]] = relationship(
        back_populates="request", order_by="GdprRequestEntry.id", lazy="raise_on_sql"
    )

    __table_args__ = (
        CheckConstraint("kind IN ('export', 'erasure')", name="kind_known"),
        CheckConstraint(
            "status IN ('open', 'verified', 'awaiting_approval', 'completed', 'refused')",
            name="status_known",
        ),
        CheckConstraint("due_at > received_at", name="due_after_received"),
        Index("ix_gdpr_requests_status_due_at", "status", "due_at"),
        Index("ix_gdpr_requests_player_id", "player_id"),
    )

    @property
    def is_closed(self) -> bool:
        return self.status in CLOSED_STATUSES

    def is_overdue(self, now: datetime | None = None) -> bool:
        return not self.is_closed and self.due_at < (now or utcnow())

    def __repr__(self) -> str:
        return f"<GdprRequest {self.id} {self.kind} {self.status}>"


class GdprRequestEntry(Base):
    """One line of a request's timeline: a note, or an action and who took it."""

    __tablename__ = "gdpr_request_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("gdpr_requests.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")

    request: Mapped[GdprRequest] = relationship(back_populates="entries")

    __table_args__ = (Index("ix_gdpr_request_entries_request_id", "request_id", "id"),)
