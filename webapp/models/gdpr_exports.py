"""GDPR exports: the files a job wrote for a request, and every download of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.models.base import Base, BigId, CreatedAtMixin, UTCDateTime, utcnow

EXPORT_FILES = ("json", "csv", "manifest")


class GdprExport(CreatedAtMixin, Base):
    """One export of a player's data, written by one job run.

    The file columns stay empty until the run has written, hashed and renamed
    both files into place, and are set in the same transaction as
    ``completed_at``: an export is offered exactly when ``completed_at`` is set,
    so a run that failed half-way never leaves anything to download. Whether a
    run is still going, failed or was cancelled is its job run's status.

    ``player_id`` is a plain number, not a foreign key: the record of what was
    exported must outlive an erasure of the player it was about.
    """

    __tablename__ = "gdpr_exports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("gdpr_requests.id"))
    player_id: Mapped[int] = mapped_column(BigInteger)
    job_run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id"), unique=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    # The folder (any fsspec URL) the run writes into, as configured when it started.
    storage_url: Mapped[str] = mapped_column(Text)
    json_url: Mapped[str | None] = mapped_column(Text)
    csv_url: Mapped[str | None] = mapped_column(Text)
    # A small JSON file naming both files with their sizes and sha256: a
    # document cannot carry the hash of its own bytes.
    manifest_url: Mapped[str | None] = mapped_column(Text)
    json_bytes: Mapped[int | None] = mapped_column(BigInteger)
    csv_bytes: Mapped[int | None] = mapped_column(BigInteger)
    json_sha256: Mapped[str | None] = mapped_column(String(64))
    csv_sha256: Mapped[str | None] = mapped_column(String(64))
    event_count: Mapped[int | None] = mapped_column(BigInteger)
    archived_event_count: Mapped[int | None] = mapped_column(BigInteger)
    exported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Links are refused from this moment on, however recently they were signed.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_gdpr_exports_request_id", "request_id"),
        Index("ix_gdpr_exports_player_id", "player_id"),
    )

    @property
    def is_ready(self) -> bool:
        return self.completed_at is not None

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at

    def url_of(self, file: str) -> str | None:
        return {"json": self.json_url, "csv": self.csv_url, "manifest": self.manifest_url}[file]


class GdprExportDownload(Base):
    """One download of one export file through a signed link, by a signed-in staff member."""

    __tablename__ = "gdpr_export_downloads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    export_id: Mapped[int] = mapped_column(ForeignKey("gdpr_exports.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    file: Mapped[str] = mapped_column(String(16))
    downloaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip_address: Mapped[str | None] = mapped_column(String(45))

    __table_args__ = (
        CheckConstraint("file IN ('json', 'csv', 'manifest')", name="file_known"),
        Index("ix_gdpr_export_downloads_export_id", "export_id"),
    )

