"""Archival and restore as job procedures.

An archive run moves one month at a time: the month's file is written and
read back outside any write transaction, and only a verified file is
committed, together with the deletion of its events and the run's checkpoint,
in one unit of work. A failure (a file that does not verify, storage that
cannot be written) fails the run with its error and leaves the month's events
hot; months committed before it stay archived, and resuming the run carries on
after them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from webapp.domain import archive
from webapp.transaction import run_in_unit_of_work, unit_of_work

log = logging.getLogger(__name__)


def archive_procedure(session: Session, context) -> dict[str, Any]:
    """Archive every month with eligible events, oldest first, from the run's checkpoint."""
    archive.refuse_while_another_runs(session, except_run=context.run_id)
    session.rollback()
    params = context.params
    now = datetime.fromisoformat(params["now"])
    holds = set(params.get("hold_player_ids") or ())
    storage = archive.ArchiveStorage(params["url"])
    checkpoint = context.checkpoint or {}
    months_done: list[str] = list(checkpoint.get("months_done", []))
    file_ids: list[int] = list(checkpoint.get("file_ids", []))
    archived = int(checkpoint.get("events_archived", 0))
    plan = archive.plan_archive(session, now, int(params["after_days"]), holds)
    session.rollback()
    total = archived + plan.events
    if plan.held_players:
        log.warning(
            "archive run %s: players on hold keep their events hot: %s", context.run_id,
            ", ".join(f"{p} ({n} events)" for p, n in sorted(plan.held_players.items())),
        )
    with unit_of_work(session):
        context.progress(archived, total=total)

    for month in plan.months:
        if month.month in months_done:
            continue
        context.raise_if_cancelled()
        written = archive.write_month(
            session, storage, month.month, run_id=context.run_id, cutoff=plan.cutoff,
            hold_player_ids=holds,
        )
        session.rollback()
        if written is None:
            continue
        verified = archive.verify_written(storage, written)
        file_ids.append(
            run_in_unit_of_work(
                session,
                partial(_commit, context, verified, holds, archived, total, months_done, file_ids),
            )
        )
        months_done.append(month.month)
        archived += written.event_count

    summary = plan.as_dict()
    del summary["events"]  # what the plan expected; events_archived is what moved
    return {
        **summary,
        "events_archived": archived,
        "file_ids": file_ids,
        "url": storage.url,
    }


def _commit(
    context,
    verified: archive.VerifiedFile,
    holds: set[int],
    archived: int,
    total: int,
    months_done: list[str],
    file_ids: list[int],
    session: Session,
) -> int:
    row = archive.commit_month(session, verified, hold_player_ids=holds)
    done = archived + verified.written.event_count
    context.progress(
        done,
        # Events recorded since the plan may have joined the month.
        total=max(total, done),
        checkpoint={"months_done": [*months_done, verified.written.month],
                    "file_ids": [*file_ids, row.id], "events_archived": done},
    )
    return row.id


def restore_procedure(session: Session, context) -> dict[str, Any]:
    """Restore one archive file in a single unit of work; a repeat inserts nothing.

    One transaction is what keeps a file wholly archived or wholly restored, so
    there is no place to stop part way: a cancel is heeded only before it begins.
    """
    params = context.params
    storage = archive.ArchiveStorage(params["url"])
    context.raise_if_cancelled()
    archive.refuse_while_another_runs(session, except_run=context.run_id)
    session.rollback()
    with unit_of_work(session):
        result = archive.restore_archive(session, storage, int(params["file_id"]))
        context.progress(result.events_in_file, total=result.events_in_file)
    return result.as_dict()
