"""Monitoring rollups: what the overview charts read instead of scanning the event table.

Buckets are keyed by whole minutes since the Unix epoch (UTC), so a day is the
bucket ``day_start_minute`` with grain ``day`` and coarser groupings are plain
integer division on both databases.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, UTCDateTime

GRAINS = ("minute", "day")


class EventVolumeRollup(Base):
    """How many events of a type and origin were recorded in one minute or one day.

    ``settled`` counts events whose ids lie at or below the fold watermark and
    is only ever added to; ``pending`` is recounted from the hot table at every
    fold, for the ids above it whose transactions may still be committing. The
    volume is their sum. Archival and rollbacks never lower it: it counts
    events ever recorded.
    """

    __tablename__ = "monitoring_event_volume"

    grain: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16), primary_key=True)
    settled: Mapped[int] = mapped_column(BigInteger, default=0)
    pending: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (CheckConstraint("grain IN ('minute', 'day')", name="grain_known"),)


class LatencyRollup(Base):
    """How many operations of a kind, in one minute or day, took a time within one histogram bin.

    Every process adds its own counts (upsert-add), so several web servers and
    workers make one histogram.
    """

    __tablename__ = "monitoring_latency"

    grain: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operation: Mapped[str] = mapped_column(String(32), primary_key=True)
    bin: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (CheckConstraint("grain IN ('minute', 'day')", name="grain_known"),)


class RollupWatermark(Base):
    """How far a rollup has folded the event table: every id up to ``last_event_id`` is settled."""

    __tablename__ = "monitoring_watermarks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    folded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The first minute bucket holding pending counts, so a fold clears only those rows.
    pending_from: Mapped[int | None] = mapped_column(BigInteger)
    # Events deleted other than by archival (backfill rollbacks, erasure): with the
    # archived totals, what turns "ever recorded" into "in the hot table now".
    removed_events: Mapped[int] = mapped_column(BigInteger, default=0)
