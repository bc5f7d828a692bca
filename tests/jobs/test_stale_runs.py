"""A run whose worker died (kill -9, out of memory) is failed by the sweep and alerted, once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from tests.domain.test_recording import won
from webapp.domain import jobs
from webapp.domain.audit import SYSTEM
from webapp.domain.recording import record_event
from webapp.extensions import db
from webapp.jobs.runner import execute_run
from webapp.models import JobRun, ReconciliationRun
from webapp.transaction import unit_of_work


class WorkerKilled(BaseException):
    """A kill from inside: nothing the runner catches, so nothing it records."""


@pytest.fixture
def sweep(app, monkeypatch):
    """The periodic sweep, every heartbeat already stale, and no quiet window to hide a repeat."""
    monkeypatch.setitem(app.config, "JOB_STALE_AFTER_SECONDS", 0)
    monkeypatch.setitem(app.config, "ALERT_QUIET_MINUTES", 0)
    return app.extensions["huey_tasks"].sweep_stale_runs.call_local


def queue(session, kind: str, **params) -> int:
    with unit_of_work(session):
        return jobs.queue_run(session, SYSTEM, kind, params).id


def players_with_wrong_stats(session, make_player, n: int) -> None:
    for k in range(n):
        player = make_player(f"p{k}")
        with unit_of_work(session):
            record_event(session, won(player, match_id=k + 1))
    session.execute(text("UPDATE player_stats SET matches_won = 0"))
    session.commit()


def fresh(session, model, run_id):
    session.rollback()
    return session.get(model, run_id)


def test_a_backfill_whose_worker_died_is_failed_and_alerted_once(session, webhook, sweep):
    run_id = queue(session, "backfill", batch_size=100)
    with unit_of_work(session):
        jobs.start_run(session, run_id, "gone-host:1")  # taken up, then the worker died

    assert sweep() == 1
    assert sweep() == 0

    run = fresh(session, JobRun, run_id)
    assert run.status == "failed" and "no heartbeat" in run.error
    [body] = webhook.received
    alert = body["alert"]
    # What a backfill that fails with an error raises: the same rule, subject and details.
    assert (alert["rule"], alert["subject"]) == ("job_failed", f"backfill run {run_id} failed")
    assert alert["details"] == {"error": run.error}


def test_a_reconciliation_killed_mid_fix_is_failed_with_its_history_row_and_alerted_once(
    session, make_player, webhook, sweep
):
    players_with_wrong_stats(session, make_player, 3)
    run_id = queue(session, "reconcile", fix=True, batch_size=1)

    def killed_in_second_batch(done: int, _total) -> None:
        if done == 2:
            raise WorkerKilled()

    with pytest.raises(WorkerKilled):
        execute_run(session, run_id, listeners=[killed_in_second_batch])
    session.rollback()
    [history] = session.scalars(select(ReconciliationRun)).all()
    assert (fresh(session, JobRun, run_id).status, history.status) == ("running", "running")

    assert sweep() == 1
    assert sweep() == 0

    history = fresh(session, ReconciliationRun, history.id)
    assert history.status == "failed" and history.finished_at is not None
    assert f"job run {run_id} failed" in history.error and "no heartbeat" in history.error
    assert history.players_fixed == 1, "the batch committed before the kill is counted"
    [body] = webhook.received
    assert body["alert"]["rule"] == "job_failed"
    # Named as a reconciliation that fails with an error names itself.
    assert body["alert"]["subject"] == f"reconciliation run {history.id} failed"
    assert "no heartbeat" in body["alert"]["details"]["error"]


def test_a_run_that_failed_with_its_worker_alive_is_not_alerted_again_by_the_sweep(
    session, webhook, sweep
):
    run_id = queue(session, "backfill", batch_size="not a number")
    assert execute_run(session, run_id).status == "failed"
    assert len(webhook.received) == 1

    assert sweep() == 0
    assert len(webhook.received) == 1


def test_a_sweep_that_finds_no_dead_worker_alerts_nobody(session, webhook, sweep):
    run_id = queue(session, "reconcile")
    assert execute_run(session, run_id).status == "succeeded"
    queue(session, "reconcile")  # queued runs have no worker to lose

    assert sweep() == 0
    assert webhook.received == []


def test_two_sweeps_at_the_same_moment_fail_a_dead_workers_run_once(
    app, session, webhook, backend
):
    if backend == "sqlite":
        pytest.skip("SQLite writers queue at BEGIN IMMEDIATE, so two units of work never hold locks at once")
    run_id = queue(session, "backfill", batch_size=100)
    with unit_of_work(session):
        jobs.start_run(session, run_id, "gone-host:1")
    first_has_read = threading.Event()
    second_done = threading.Event()
    failed_by: dict[str, list[int]] = {}

    def sweep(name: str, first: bool) -> None:
        with app.app_context():
            own = db.session()
            with unit_of_work(own):
                failed_by[name] = [run.id for run in jobs.fail_stale_runs(own, timedelta(0))]
                if first:  # holds its transaction open until the other sweep has looked
                    first_has_read.set()
                    second_done.wait(10)
            db.session.remove()

    first = threading.Thread(target=sweep, args=("first", True))
    first.start()
    first_has_read.wait(10)
    sweep("second", False)
    second_done.set()
    first.join(30)

    assert failed_by == {"first": [run_id], "second": []}
    assert fresh(session, JobRun, run_id).status == "failed"
