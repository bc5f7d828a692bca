"""Huey tasks: thin wrappers that open an app context and call the job runner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import Flask
from huey import Huey, crontab
from huey.api import TaskWrapper

from webapp.extensions import db
from webapp.transaction import unit_of_work


@dataclass(frozen=True)
class Tasks:
    run_job: TaskWrapper
    sweep_stale_runs: TaskWrapper
    nightly_reconciliation: TaskWrapper
    check_alerts: TaskWrapper


def _reconcile_schedule(value: str) -> crontab:
    try:
        hour, minute = (int(part) for part in value.split(":"))
    except ValueError:
        raise RuntimeError(f"RECONCILE_AT must be HH:MM in UTC, not {value!r}") from None
    return crontab(minute=str(minute), hour=str(hour))


def register_tasks(huey: Huey, app: Flask) -> Tasks:
    """Register the app's tasks on ``huey``."""
    from webapp.domain import jobs
    from webapp.domain.audit import SYSTEM
    from webapp.jobs.runner import execute_run

    @huey.task(name="run_job")
    def run_job(run_id: int) -> str:
        with app.app_context():
            return execute_run(db.session(), run_id).status

    @huey.periodic_task(crontab(minute="*"), name="sweep_stale_runs")
    def sweep_stale_runs() -> int:
        with app.app_context():
            session = db.session()
            with unit_of_work(session):
                stale = jobs.fail_stale_runs(session, timedelta(seconds=app.config["JOB_STALE_AFTER_SECONDS"]))
            return len(stale)

    @huey.periodic_task(_reconcile_schedule(app.config["RECONCILE_AT"]), name="nightly_reconciliation")
    def nightly_reconciliation() -> str:
        with app.app_context():
            session = db.session()
            with unit_of_work(session):
                run = jobs.queue_run(session, SYSTEM, "reconcile",
                                     {"fix": app.config["RECONCILE_NIGHTLY_FIX"], "scheduled": True})
            return execute_run(session, run.id).status

    @huey.periodic_task(crontab(minute="*"), name="check_alerts")
    def check_alerts() -> int:
        from webapp.jobs.alerting import check_event_rate, deliver_pending

        with app.app_context():
            session = db.session()
            check_event_rate(session)
            return deliver_pending(session)

    return Tasks(run_job, sweep_stale_runs, nightly_reconciliation, check_alerts)
