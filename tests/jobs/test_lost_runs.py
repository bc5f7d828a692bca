"""A run stored as queued but never handed to the queue (the enqueue after its commit failed) is handed out again."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tests.jobs.conftest import wait_until_finished
from webapp.domain import jobs
from webapp.domain.audit import SYSTEM
from webapp.domain.errors import Conflict
from webapp.extensions import db
from webapp.jobs.queue import enqueue_run, start_in_process_consumer
from webapp.jobs.runner import execute_run
from webapp.models import JobRun
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work


@pytest.fixture
def queue(app, monkeypatch):
    """The app's queue, empty, and a sweep for which every queued run is old enough to be looked for."""
    huey = app.extensions["huey"]
    huey.flush()
    monkeypatch.setitem(app.config, "JOB_STALE_AFTER_SECONDS", 0)
    yield huey
    huey.flush()


def sweep(app) -> None:
    app.extensions["huey_tasks"].sweep_stale_runs.call_local()


def stored_queued_run(session) -> int:
    """A reconciliation check stored as queued: what a failed enqueue leaves behind."""
    with unit_of_work(session):
        return jobs.queue_run(session, SYSTEM, "reconcile", {"fix": False}).id


def waiting(queue, run_id: int) -> int:
    return sum(1 for task in queue.pending() if task.name == "run_job" and task.args == (run_id,))


def test_a_run_the_queue_never_got_is_handed_to_the_workers_by_the_sweep_and_runs(app, session, queue):
    run_id = stored_queued_run(session)
    assert waiting(queue, run_id) == 0

    sweep(app)

    assert waiting(queue, run_id) == 1
    consumer = start_in_process_consumer(app, workers=1)
    try:
        run = wait_until_finished(session, run_id)
    finally:
        consumer.stop(graceful=True)
    assert run.status == "succeeded", run.error


def test_a_run_waiting_in_the_queue_is_not_handed_out_again(app, session, queue):
    run_id = stored_queued_run(session)
    enqueue_run(app, run_id)

    sweep(app)
    sweep(app)

    assert waiting(queue, run_id) == 1


def test_a_run_resumed_just_now_is_not_handed_out_again_however_long_ago_it_was_queued(
    app, session, queue, monkeypatch
):
    run_id = stored_queued_run(session)
    long_ago = utcnow() - timedelta(days=3)
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, run_id)
        run = jobs.get_run(session, run_id)
        run.created_at = run.queued_at = long_ago
    with unit_of_work(session):
        jobs.resume_run(session, SYSTEM, run_id)
    monkeypatch.setitem(app.config, "JOB_STALE_AFTER_SECONDS", 300)

    sweep(app)

    assert waiting(queue, run_id) == 0, "resumed a moment ago: its task may still be on its way"


def test_a_task_for_a_run_that_already_ran_leaves_it_alone(app, session, queue):
    run_id = stored_queued_run(session)
    assert execute_run(session, run_id).status == "succeeded"
    finished = session.get(JobRun, run_id).finished_at
    session.rollback()

    assert app.extensions["huey_tasks"].run_job.call_local(run_id) == "not queued"

    run = session.get(JobRun, run_id)
    assert (run.status, run.finished_at) == ("succeeded", finished)


def test_of_two_workers_handed_the_same_run_at_once_one_runs_it(app, session, backend):
    if backend == "sqlite":
        pytest.skip("SQLite writers queue at BEGIN IMMEDIATE, so two units of work never hold locks at once")
    run_id = stored_queued_run(session)
    both_read = threading.Barrier(2, timeout=10)
    claims: list[str] = []

    def claim(worker: str) -> None:
        with app.app_context():
            own = db.session()
            try:
                with unit_of_work(own):
                    # Each worker has seen the run queued before either claims it.
                    assert jobs.get_run(own, run_id).status == "queued"
                    both_read.wait()
                    jobs.start_run(own, run_id, worker)
                claims.append(worker)
            except Conflict:
                claims.append("refused")
            finally:
                db.session.remove()

    workers = [threading.Thread(target=claim, args=(f"worker:{n}",)) for n in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    winners = [c for c in claims if c != "refused"]
    assert len(claims) == 2 and len(winners) == 1, claims
    session.rollback()
    run = session.get(JobRun, run_id)
    assert (run.status, run.worker) == ("running", winners[0])


def test_a_cancel_and_a_claim_at_the_same_moment_leave_one_outcome(app, session, backend):
    if backend == "sqlite":
        pytest.skip("SQLite writers queue at BEGIN IMMEDIATE, so two units of work never hold locks at once")
    run_id = stored_queued_run(session)
    both_read = threading.Barrier(2, timeout=10)

    def at_once(act) -> None:
        with app.app_context():
            own = db.session()
            try:
                with unit_of_work(own):
                    assert jobs.get_run(own, run_id).status == "queued"
                    both_read.wait()
                    act(own)
            except Conflict:
                pass
            finally:
                db.session.remove()

    acts = [lambda own: jobs.start_run(own, run_id, "worker:1"),
            lambda own: jobs.request_cancel(own, SYSTEM, run_id)]
    threads = [threading.Thread(target=at_once, args=(act,)) for act in acts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    session.rollback()
    run = session.get(JobRun, run_id)
    # Either the cancel came first, or the worker did and is asked to stop: never a
    # cancelled run that a worker is running, which a resume would hand to a second.
    assert (run.status, run.cancel_requested) in {("cancelled", True), ("running", True)}, (
        run.status, run.cancel_requested, run.worker
    )
    assert (run.status == "running") == (run.worker == "worker:1")
