"""Stored job runs (backfill, reconciliation, archival, imports, exports) and backfill batch ledgers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.activity import JsonDocument
from webapp.models.base import Base, BigId, CreatedAtMixin, UTCDateTime

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")


class JobRun(CreatedAtMixin, Base):
    """One run of a long job, whoever started it and wherever it runs.

    Progress and the checkpoint are committed with each batch, so a run that
    dies (even by kill -9) can be seen as stale from its heartbeat and resumed
    from its last checkpoint.
    """

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    # Who started it without a staff account, e.g. "command line (alice@ops-1)".
    requested_via: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # When it was last queued (started or resumed): the sweep hands the workers
    # again a run queued for long with no task waiting for it.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    # Where a resumed run continues, e.g. {"after_match_id": 81234}.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    error: Mapped[str | None] = mapped_column(Text)
    # When a worker first took the run up; resuming keeps it.
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the current (or last) attempt began, and how much was done before it:
    # the rate and time left are measured from there, not across the time the
    # run was stopped. Both are None for runs started before attempts were recorded.
    attempt_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempt_done_from: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # host:pid of the worker running it, to tell a live run from an orphan.
    worker: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status_known"
        ),
        Index("ix_job_runs_kind_status", "kind", "status"),
    )

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class BackfillBatch(Base):
    """The ledger line of one committed backfill batch."""

    __tablename__ = "backfill_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id"))
    batch_no: Mapped[int] = mapped_column(Integer)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    events_inserted: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    rejected_forfeit: Mapped[int] = mapped_column(Integer, default=0)
    rejected_no_show: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # The ids of the events this batch inserted lie in this range, so a rollback
    # finds them through the primary key.
    first_event_id: Mapped[int | None] = mapped_column(BigInteger)
    last_event_id: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint_after: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("run_id", "batch_no"),)


class AlertDelivery(CreatedAtMixin, Base):
    """One alert sent (or being retried) to one channel."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    subject: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
        CheckConstraint("channel IN ('webhook', 'email')", name="channel_known"),
        Index("ix_alert_deliveries_status", "status"),
    )
