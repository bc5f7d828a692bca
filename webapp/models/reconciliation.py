"""Stored reconciliation runs and the drift each one found."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, UTCDateTime, utcnow

RUN_STATUSES = ("running", "succeeded", "failed")


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    fix: Mapped[bool] = mapped_column(default=False)
    # Set when the run was limited to one player.
    player_id: Mapped[int | None] = mapped_column(BigInteger)
    players_checked: Mapped[int] = mapped_column(Integer, default=0)
    players_drifted: Mapped[int] = mapped_column(Integer, default=0)
    players_fixed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')", name="status_known"),
    )


class ReconciliationDrift(Base):
    """One stat of one player that did not match its events when a run looked."""

    __tablename__ = "reconciliation_drifts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"))
    player_id: Mapped[int] = mapped_column(BigInteger)
    scope: Mapped[str] = mapped_column(String(8))
    stat: Mapped[str] = mapped_column(String(40))
    expected: Mapped[int] = mapped_column(Integer)
    actual: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_reconciliation_drifts_run_id", "run_id"),)
