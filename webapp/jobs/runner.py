"""Running a stored job run: start it, call its procedure, record how it ended.

Procedures do their work in batches, each batch one unit of work that also
records progress and the checkpoint (``JobContext.progress``), so progress on
record always matches committed work. Between batches they call
``JobContext.raise_if_cancelled`` and stop there when staff cancelled the run.
Whatever a procedure raises, the run ends failed with the error and its
traceback, and everything already committed stays consistent.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from webapp.collection import fewer_collections
from webapp.domain import jobs
from webapp.jobs.alerting import raise_alert_now
from webapp.models.jobs import JobRun
from webapp.transaction import unit_of_work

log = logging.getLogger(__name__)

Procedure = Callable[[Session, "JobContext"], dict[str, Any] | None]
ProgressListener = Callable[[int, int | None], None]


class JobCancelled(Exception):
    """Staff cancelled the run; it stops at a batch boundary."""


# What a running run of each kind does once staff cancel it, as the dashboard and
# the CLI say it ("Run 12 will stop ..."): each procedure stops only where its
# committed work is whole, and a restore has no such place once it writes.
WHEN_CANCELLED = {
    "backfill": "will stop at the end of its current batch; everything committed so far stays.",
    "backfill_rollback": (
        "will stop at the end of its current batch; what it deleted so far stays deleted."
    ),
    "import_atp": "will stop at the end of its current chunk; everything committed so far stays.",
    "archive": "will stop before its next month; the months archived so far stay archived.",
    "gdpr_export": "will stop at its next step and keep none of the files it wrote.",
    "reconcile": (
        "will stop before its next repair batch, or once its drift search (one query) "
        "ends; players repaired so far stay repaired."
    ),
    "archive_restore": (
        "cannot stop part way: a restore puts the whole file back in one transaction, "
        "so it stops only if it has not begun writing, and otherwise runs to its end."
    ),
}


def when_cancelled(kind: str) -> str:
    """Say what a running run of ``kind`` does once cancelled, to follow "Run 12 " or "it "."""
    return WHEN_CANCELLED.get(
        kind, "will stop at its next checkpoint; everything committed so far stays."
    )


def failed_subject(kind: str, run_id: int) -> str:
    """The subject of the alert that a run failed, e.g. "backfill run 12 failed"."""
    return f"{kind} run {run_id} failed"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JobContext:
    """What a procedure gets besides its session: its run, parameters and checkpoint."""

    session: Session
    run_id: int
    params: dict[str, Any]
    checkpoint: dict[str, Any] | None
    listeners: list[ProgressListener] = field(default_factory=list)
    # The worker running it: progress is stored only while it still holds the run.
    worker: str | None = None

    def progress(self, done: int, *, total: int | None = None, checkpoint: dict[str, Any] | None = None) -> None:
        """Record progress inside the procedure's current unit of work (flush only).

        :raise RunTakenOver: if the worker no longer holds the run; its unit of work must roll back.
        """
        jobs.record_progress(
            self.session, self.run_id, done=done, total=total, checkpoint=checkpoint, worker=self.worker
        )
        if checkpoint is not None:
            self.checkpoint = checkpoint
        for listener in self.listeners:
            listener(done, total)

    def raise_if_cancelled(self) -> None:
        """Stop here if staff asked the run to cancel (call between batches)."""
        self.session.rollback()  # read the flag as committed now, not as first seen
        if jobs.get_run(self.session, self.run_id).cancel_requested:
            raise JobCancelled()


def procedures() -> dict[str, Procedure]:
    """The procedure of each job kind."""
    from webapp.jobs.archive import archive_procedure, restore_procedure
    from webapp.jobs.atp_import import import_atp_procedure
    from webapp.jobs.backfill import backfill_procedure, rollback_procedure
    from webapp.jobs.gdpr_export import export_procedure
    from webapp.jobs.reconcile import reconcile_procedure

    return {
        "reconcile": reconcile_procedure,
        "backfill": backfill_procedure,
        "backfill_rollback": rollback_procedure,
        "import_atp": import_atp_procedure,
        "archive": archive_procedure,
        "archive_restore": restore_procedure,
        "gdpr_export": export_procedure,
    }


def execute_run(session: Session, run_id: int, *, worker: str | None = None,
                listeners: list[ProgressListener] | None = None) -> JobRun:
    """Run a queued job run to its end and return it (succeeded, failed or cancelled)."""
    worker = worker or worker_name()
    with unit_of_work(session):
        run = jobs.start_run(session, run_id, worker)
        kind, params, checkpoint = run.kind, dict(run.params or {}), run.checkpoint
    procedure = procedures().get(kind)
    context = JobContext(session, run_id, params, checkpoint, list(listeners or []), worker)
    try:
        if procedure is None:
            raise RuntimeError(f"no procedure for job kind {kind!r}")
        with fewer_collections():
            result = procedure(session, context)
    except JobCancelled:
        session.rollback()
        _store_end(session, run_id, worker, lambda: jobs.cancel_run(session, run_id))
    except jobs.RunTakenOver as lost:
        # The sweep has failed the run and alerted; it is the sweep's, or a new attempt's, now.
        session.rollback()
        log.warning("%s", lost)
    except Exception as exc:
        session.rollback()
        log.exception("job run %s (%s) failed", run_id, kind)
        message = "".join(traceback.format_exception_only(exc)).strip()
        error = f"{message}\n\n{traceback.format_exc()}"
        failed = _store_end(session, run_id, worker, lambda: jobs.fail_run(session, run_id, error))
        if failed and kind != "reconcile":  # a failed reconciliation raises its own alert
            raise_alert_now(session, "job_failed", failed_subject(kind, run_id), {"error": message})
    else:
        _store_end(session, run_id, worker, lambda: jobs.finish_run(session, run_id, result))
    session.rollback()
    return jobs.get_run(session, run_id)


def _store_end(session: Session, run_id: int, worker: str, store: Callable[[], object]) -> bool:
    """Store how the attempt ended, if ``worker`` still holds the run; say whether it did."""
    try:
        with unit_of_work(session):
            jobs.hold(session, run_id, worker)
            store()
    except jobs.RunTakenOver as lost:
        log.warning("%s", lost)
        return False
    return True
