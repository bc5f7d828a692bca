"""Runs whose worker died (kill -9, out of memory): failed, closed and alerted, once.

A worker that dies raises nothing, so ``execute_run`` never records the failure
and never alerts. The sweep finds such runs by their heartbeat and does both:
the same ``job_failed`` alert a failed run of that kind raises, and, for a
reconciliation, the failure of the history row the dead worker left running.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from webapp.domain import jobs, reconciliation
from webapp.jobs.alerting import raise_alert
from webapp.jobs.reconcile import reconciliation_run_of
from webapp.jobs.runner import failed_subject
from webapp.transaction import unit_of_work


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
