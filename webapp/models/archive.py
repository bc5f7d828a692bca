"""Cold storage: archived event files with their manifest, and per-player totals of what they hold."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, CreatedAtMixin, UTCDateTime


class ArchiveFile(CreatedAtMixin, Base):
    """One gzip JSON-lines file of one month's events, as written and verified."""

    __tablename__ = "archive_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id"))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM of occurred_at
    url: Mapped[str] = mapped_column(Text, unique=True)
    event_count: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    restored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ArchivedEventCount(Base):
    """How many archived events of a kind a player has: reconciliation adds these to the hot events.

    Keyed like the counts reconciliation groups events by, so archived history
    stays in every stat exactly as if it were still in the hot table.
    """

    __tablename__ = "archived_event_counts"

    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    is_private: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    is_team: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class ArchivedEventKey(Base):
    """The idempotency key of an archived event, so the same fact recorded again stays one event.

    The hot table's unique key cannot see events that left it; recording checks
    these for facts old enough to have been archived.
    """

    __tablename__ = "archived_event_keys"

    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    source_model: Mapped[str] = mapped_column(String(40), primary_key=True)
    source_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Indexed: a backfill's rollback looks up the archived events in its batches' id ranges.
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("archive_files.id"), index=True)
