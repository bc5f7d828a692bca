"""Job runs through the real queue: a consumer picks them up, progress and outcomes are stored."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.domain.test_recording import won
from webapp.domain import backfill, jobs, operations
from webapp.domain.audit import SYSTEM
from webapp.domain.backfill import BackfillScope, Safeguards
from webapp.domain.errors import Conflict
from webapp.domain.recording import record_event
from webapp.jobs.queue import enqueue_run, start_in_process_consumer
from webapp.jobs.runner import execute_run
from webapp.models.audit import AuditEntry
from webapp.models.base import utcnow
from webapp.models.jobs import JobRun
from webapp.transaction import unit_of_work


@pytest.fixture
def consumer(app):
    running = start_in_process_consumer(app, workers=2)
    yield running
    running.stop(graceful=True)


def queue(session, kind="reconcile", **params) -> int:
    with unit_of_work(session):
        return jobs.queue_run(session, SYSTEM, kind, params).id


def wait_until_finished(session, run_id, timeout=30.0) -> JobRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.rollback()
        run = session.get(JobRun, run_id)
        if run.is_finished:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def test_a_queued_reconciliation_is_run_by_the_consumer_and_repairs_drift(app, session, make_player, consumer):
    alice = make_player("alice")
    with unit_of_work(session):
        record_event(session, won(alice))
    session.execute(text("UPDATE player_stats SET matches_won = 7"))
    session.commit()
    run_id = queue(session, fix=True)
    enqueue_run(app, run_id)
    run = wait_until_finished(session, run_id)
    assert run.status == "succeeded", run.error
    assert run.result["players_drifted"] == 1
    assert run.result["players_fixed"] == 1
    assert run.started_at is not None and run.finished_at >= run.started_at
    session.rollback()
    assert session.execute(text("SELECT matches_won FROM player_stats WHERE scope = 'all'")).scalar() == 1



def test_the_nightly_reconciliation_fixes_unless_a_fix_started_by_staff_is_still_queued(
    app, session, make_player, monkeypatch
):
    monkeypatch.setitem(app.config, "RECONCILE_NIGHTLY_FIX", True)
    alice = make_player("alice")
    with unit_of_work(session):
        record_event(session, won(alice))
    session.execute(text("UPDATE player_stats SET matches_won = 7"))
    session.commit()
    nightly = app.extensions["huey_tasks"].nightly_reconciliation
    staff_fix = queue(session, fix=True)

    assert nightly.call_local() == "skipped"
    session.rollback()
    assert session.query(JobRun).count() == 1, "no second fix was queued beside the waiting one"

    assert execute_run(session, staff_fix).status == "succeeded"
    assert nightly.call_local() == "succeeded"
    session.rollback()
    scheduled = session.query(JobRun).filter(JobRun.id != staff_fix).one()
    assert scheduled.params == {"fix": True, "scheduled": True, "batch_size": app.config["RECONCILE_FIX_BATCH_SIZE"]}
    assert session.execute(text("SELECT matches_won FROM player_stats WHERE scope = 'all'")).scalar() == 1

def test_a_failing_job_is_stored_failed_with_its_error_and_traceback(session):
    run_id = queue(session, player_id="not-a-number")
    run = execute_run(session, run_id)
    assert run.status == "failed"
    assert "Traceback" in run.error
    assert run.finished_at is not None


def test_a_queued_run_cancelled_before_it_starts_never_runs(session):
    run_id = queue(session)
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, run_id)
    with pytest.raises(Conflict, match="cancelled, not queued"):
        execute_run(session, run_id)
    session.rollback()
    assert session.get(JobRun, run_id).status == "cancelled"


def test_a_run_whose_worker_went_silent_is_failed_as_stale_and_can_be_resumed(session):
    run_id = queue(session)
    with unit_of_work(session):
        jobs.start_run(session, run_id, "gone-host:1")
    later = utcnow() + timedelta(minutes=10)
    with unit_of_work(session):
        stale = jobs.fail_stale_runs(session, timedelta(minutes=5), now=later)
    assert [run.id for run in stale] == [run_id]
    session.rollback()
    assert "no heartbeat" in session.get(JobRun, run_id).error
    with unit_of_work(session):
        jobs.resume_run(session, SYSTEM, run_id)
    assert execute_run(session, run_id).status == "succeeded"


def test_only_failed_or_cancelled_runs_can_be_resumed(session):
    run_id = queue(session)
    with pytest.raises(Conflict):
        with unit_of_work(session):
            jobs.resume_run(session, SYSTEM, run_id)


def test_progress_reports_share_rate_and_time_left(session):
    run_id = queue(session)
    with unit_of_work(session):
        run = jobs.start_run(session, run_id, "here:1")
        run.started_at = run.attempt_started_at = utcnow() - timedelta(seconds=10)
        jobs.record_progress(session, run_id, done=250, total=1000)
    progress = jobs.progress_of(session.get(JobRun, run_id))
    assert progress.percent == pytest.approx(25.0)
    assert progress.rate_per_second == pytest.approx(25.0, rel=0.2)
    assert progress.seconds_left == pytest.approx(30.0, rel=0.2)


def test_a_resumed_run_is_measured_over_its_current_attempt_only(session):
    """A backfill stopped for the peak window, resumed 23 h later and 10 min back in at 55 %."""
    run_id = queue(session, kind="backfill")
    with unit_of_work(session):
        run = jobs.start_run(session, run_id, "here:1")
        first_start = utcnow() - timedelta(hours=23, minutes=10)
        run.started_at = run.attempt_started_at = first_start
        jobs.record_progress(session, run_id, done=500, total=1000)
        jobs.cancel_run(session, run_id)
    with unit_of_work(session):
        jobs.resume_run(session, SYSTEM, run_id)
    waiting = jobs.progress_of(session.get(JobRun, run_id))
    assert (waiting.percent, waiting.rate_per_second, waiting.seconds_left) == (50.0, None, None)

    with unit_of_work(session):
        jobs.start_run(session, run_id, "here:2")
        jobs.record_progress(session, run_id, done=550, total=1000)
    run = session.get(JobRun, run_id)
    progress = jobs.progress_of(run, now=run.attempt_started_at + timedelta(minutes=10))

    assert progress.percent == pytest.approx(55.0)
    assert progress.rate_per_second == pytest.approx(50 / 600)
    assert progress.seconds_left == pytest.approx(90 * 60)
    assert run.started_at == first_start, "the run still shows when it first started"


def test_a_procedure_that_counts_from_zero_again_has_done_all_of_it_in_this_attempt(session):
    run_id = queue(session, kind="import_atp")
    with unit_of_work(session):
        jobs.start_run(session, run_id, "here:1")
        jobs.record_progress(session, run_id, done=5, total=10)
        jobs.fail_run(session, run_id, "the disk filled up")
    with unit_of_work(session):
        jobs.resume_run(session, SYSTEM, run_id)
        jobs.start_run(session, run_id, "here:2")
        jobs.record_progress(session, run_id, done=2, total=10)
    run = session.get(JobRun, run_id)
    progress = jobs.progress_of(run, now=run.attempt_started_at + timedelta(seconds=20))

    assert progress.rate_per_second == pytest.approx(0.1)
    assert progress.seconds_left == pytest.approx(80.0)


# Resuming applies the rules that keep some runs from starting beside others.


QUIET = Safeguards(now=utcnow(), peak_window="off")


def queue_fix(session) -> int:
    with unit_of_work(session):
        return operations.queue_reconciliation(session, SYSTEM, fix=True, batch_size=500).id


def resume_actions(session) -> int:
    session.rollback()
    return session.query(AuditEntry).filter(AuditEntry.action == "job.reconcile.resume").count()


def test_a_failed_fix_is_not_resumed_while_another_fix_is_queued(session):
    first = queue_fix(session)
    with unit_of_work(session):
        jobs.start_run(session, first, "gone-host:1")
        jobs.fail_stale_runs(session, timedelta(minutes=5), now=utcnow() + timedelta(minutes=10))
    second = queue_fix(session)

    with pytest.raises(Conflict, match=f"reconciliation run {second} is already queued and fixes"):
        with unit_of_work(session):
            operations.resume_job(session, SYSTEM, first, safeguards=QUIET)

    session.rollback()
    assert session.get(JobRun, first).status == "failed"
    assert resume_actions(session) == 0

    assert execute_run(session, second).status == "succeeded"
    with unit_of_work(session):
        operations.resume_job(session, SYSTEM, first, safeguards=QUIET)
    assert execute_run(session, first).status == "succeeded"


def test_a_check_is_resumed_beside_a_queued_fix(session):
    check = queue(session, fix=False, batch_size=500)
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, check)
    queue_fix(session)

    with unit_of_work(session):
        operations.resume_job(session, SYSTEM, check, safeguards=QUIET)

    session.rollback()
    assert session.get(JobRun, check).status == "queued"


def test_a_cancelled_rollback_is_not_resumed_while_a_backfill_is_queued(session):
    with unit_of_work(session):
        backfilled = backfill.start_backfill(session, SYSTEM, BackfillScope(), safeguards=QUIET).id
    assert execute_run(session, backfilled).status == "succeeded"
    with unit_of_work(session):
        rollback = backfill.start_rollback(session, SYSTEM, backfilled).id
        jobs.request_cancel(session, SYSTEM, rollback)
    with unit_of_work(session):
        later = backfill.start_backfill(session, SYSTEM, BackfillScope(), safeguards=QUIET).id

    with pytest.raises(Conflict, match=f"backfill run {later} is queued"):
        with unit_of_work(session):
            operations.resume_job(session, SYSTEM, rollback, safeguards=QUIET)

    session.rollback()
    assert session.get(JobRun, rollback).status == "cancelled"
