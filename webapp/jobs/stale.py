"""What the minute sweep looks after: runs whose worker died, and runs the queue never got.

Runs whose worker died (kill -9, out of memory) are failed, closed and alerted, once.

A worker that dies raises nothing, so ``execute_run`` never records the failure
and never alerts. The sweep finds such runs by their heartbeat and does both:
the same ``job_failed`` alert a failed run of that kind raises, and, for a
reconciliation, the failure of the history row the dead worker left running.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy.orm import Session

from webapp.domain import jobs, reconciliation
from webapp.jobs.alerting import raise_alert
from webapp.jobs.queue import enqueue_run
from webapp.jobs.reconcile import reconciliation_run_of
from webapp.jobs.runner import failed_subject
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work

log = logging.getLogger(__name__)


def sweep_stale_runs(
    session: Session, stale_after: timedelta, now: datetime | None = None
) -> list[int]:
    """Fail the runs silent for ``stale_after``, close their reconciliations and alert.

    The alert is stored in the unit of work that fails the run, so each run is
    alerted exactly when it turns failed: a later sweep no longer sees it
    running, and a sweep that rolls back alerts nobody. Sending follows the
    commit, through the delivery path every alert takes (retried, never fatal).
    Returns the ids of the runs it failed.
    """
    with unit_of_work(session):
        stale = jobs.fail_stale_runs(session, stale_after, now)
        for run in stale:
            subject = failed_subject(run.kind, run.id)
            reconciliation_run = reconciliation_run_of(run) if run.kind == "reconcile" else None
            if reconciliation_run is not None:
                reason = f"job run {run.id} failed: {run.error}"
                reconciliation.fail_abandoned_run(
                    session, reconciliation_run, reason, run.finished_at
                )
                # Named as a reconciliation that fails while its worker lives names it.
                subject = failed_subject("reconciliation", reconciliation_run)
            raise_alert(session, "job_failed", subject, {"error": run.error})
        return [run.id for run in stale]


def requeue_lost_runs(
    app: Flask, session: Session, older_than: timedelta, now: datetime | None = None
) -> list[int]:
    """Hand the workers again each run queued for ``older_than`` whose task is not in the queue.

    A run is stored first and handed to the queue after its commit. If that
    failed (Redis down for a moment), the run would stay queued for ever, and
    every run refused while it is active (a second backfill, fix or archive)
    with it. A run whose task is waiting in the queue is left alone; one taken
    by a worker an instant ago may be handed out twice, and the second worker
    cannot claim it (``jobs.start_run``) and lets it be. Returns the ids handed out.
    """
    cutoff = (now or utcnow()) - older_than
    candidates = jobs.queued_before(session, cutoff)
    session.rollback()
    if not candidates:
        return []
    pending = app.extensions["huey"].pending()
    waiting = {task.args[0] for task in pending if task.name == "run_job" and task.args}
    lost = [run_id for run_id in candidates if run_id not in waiting]
    for run_id in lost:
        log.warning("job run %s was queued but not in the queue; handing it to the workers again", run_id)
        enqueue_run(app, run_id)
    return lost
