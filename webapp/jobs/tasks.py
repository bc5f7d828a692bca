"""Huey tasks: thin wrappers that open an app context and call the job runner."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask
from huey import Huey, crontab
from huey.api import TaskWrapper

from webapp.extensions import db
from webapp.transaction import unit_of_work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tasks:
    run_job: TaskWrapper
    sweep_stale_runs: TaskWrapper
    nightly_reconciliation: TaskWrapper
    check_alerts: TaskWrapper
    fold_event_volume: TaskWrapper
    check_event_volume: TaskWrapper


def _reconcile_schedule(value: str) -> crontab:
    try:
        hour, minute = (int(part) for part in value.split(":"))
    except ValueError:
        raise RuntimeError(f"RECONCILE_AT must be HH:MM in UTC, not {value!r}") from None
    return crontab(minute=str(minute), hour=str(hour))


def register_tasks(huey: Huey, app: Flask) -> Tasks:
    """Register the app's tasks on ``huey``."""
    from webapp.domain import operations
    from webapp.domain.audit import SYSTEM
    from webapp.domain.errors import Conflict
    from webapp.domain.jobs import NotQueued
    from webapp.jobs.runner import execute_run
    from webapp.jobs.stale import requeue_lost_runs
    from webapp.jobs.stale import sweep_stale_runs as sweep

    @huey.task(name="run_job")
    def run_job(run_id: int) -> str:
        with app.app_context():
            try:
                return execute_run(db.session(), run_id).status
            except NotQueued as taken:
                # Handed out twice (see requeue_lost_runs), cancelled while waiting, or done.
                log.info("nothing to run: %s", taken)
                return "not queued"

    @huey.periodic_task(crontab(minute="*"), name="sweep_stale_runs")
    def sweep_stale_runs() -> int:
        with app.app_context():
            session = db.session()
            stale_after = timedelta(seconds=app.config["JOB_STALE_AFTER_SECONDS"])
            swept = sweep(session, stale_after)
            requeue_lost_runs(app, session, stale_after)
            return len(swept)

    @huey.periodic_task(_reconcile_schedule(app.config["RECONCILE_AT"]), name="nightly_reconciliation")
    def nightly_reconciliation() -> str:
        with app.app_context():
            session = db.session()
            try:
                with unit_of_work(session):
                    run = operations.queue_reconciliation(
                        session, SYSTEM, fix=app.config["RECONCILE_NIGHTLY_FIX"],
                        batch_size=app.config["RECONCILE_FIX_BATCH_SIZE"], scheduled=True,
                    )
            except Conflict as refused:  # a fix started by staff is still running
                log.warning("nightly reconciliation skipped: %s", refused)
                return "skipped"
            return execute_run(session, run.id).status

    @huey.periodic_task(crontab(minute="*"), name="check_alerts")
    def check_alerts() -> int:
        from webapp.jobs.alerting import check_event_rate, deliver_pending

        with app.app_context():
            session = db.session()
            check_event_rate(session)
            return deliver_pending(session)

    # Hourly: the check compares whole hours, and a drop that lasts alerts once an hour.
    @huey.periodic_task(crontab(minute="5"), name="check_event_volume")
    def check_event_volume() -> int:
        from webapp.jobs.alerting import check_event_volume as check

        with app.app_context():
            return len(check(db.session()))

    # Every minute: the overview charts read these rollups instead of the event table.
    @huey.periodic_task(crontab(minute="*"), name="fold_event_volume")
    def fold_event_volume() -> int:
        from webapp.domain.monitoring import fold_event_volume as fold

        with app.app_context():
            session = db.session()
            with unit_of_work(session):
                return fold(session).settled_events

    return Tasks(
        run_job=run_job,
        sweep_stale_runs=sweep_stale_runs,
        nightly_reconciliation=nightly_reconciliation,
        check_alerts=check_alerts,
        fold_event_volume=fold_event_volume,
        check_event_volume=check_event_volume,
    )
