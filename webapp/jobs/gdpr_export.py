"""The GDPR export as a job procedure.

The export reads through a session of its own, inside one snapshot, while the
run's session records progress (and notices cancellation) in short units of
work beside it; so a long export never holds a write transaction, and what it
writes agrees with itself however much is recorded meanwhile. Files are
written under temporary names and renamed when whole; the export is offered
only once the transaction that records them commits. A failure or a
cancellation removes what was written, and the runner marks the run failed
(with the error) or cancelled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from webapp.database import begin_snapshot
from webapp.domain import gdpr_export
from webapp.domain.archive import ArchiveStorage
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work


def export_procedure(session: Session, context) -> dict[str, Any]:
    """Write the export of the run's request, then record it as ready."""
    params = context.params
    with unit_of_work(session):
        export = gdpr_export.export_for_run(session, context.run_id)
        # Verification is checked again here: it could have been withdrawn since the queueing.
        gdpr_export.check_still_allowed(session, export)
        export_id, player_id, storage_url = export.id, export.player_id, export.storage_url
        total = gdpr_export.count_events(session, player_id)
        context.progress(0, total=total)
    storage = gdpr_export.ExportStorage(storage_url)
    archive_url = params.get("archive_url")
    archive_storage = ArchiveStorage(archive_url) if archive_url else None

    def progress(done: int) -> None:
        context.raise_if_cancelled()
        with unit_of_work(session):
            context.progress(done, total=max(total, done))

    reader = Session(bind=session.get_bind())
    try:
        begin_snapshot(reader)
        written = gdpr_export.write_export_files(
            reader, storage, export_id, player_id, exported_at=utcnow(),
            archive_storage=archive_storage, request_id=int(params["request_id"]),
            progress=progress,
        )
    finally:
        reader.close()
    try:
        context.raise_if_cancelled()
        with unit_of_work(session):
            gdpr_export.complete_export(
                session, export_id, written,
                link_max_age_seconds=int(params["link_max_age_seconds"]),
            )
            context.progress(written.streamed.event_count, total=written.streamed.event_count)
    except BaseException:
        # Cancelled or not recorded: never offered, so nothing may stay behind for anyone to find.
        written.remove(storage)
        raise
    return {"export_id": export_id, **written.as_dict()}
