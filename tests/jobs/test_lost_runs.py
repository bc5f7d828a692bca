"""Handing runs to workers: a run the queue never got is handed out again, and a run is claimed once."""

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


def at_the_same_moment(app, run_id: int, *acts) -> list:
    """Run each act in a unit of work of its own, all of them once each has seen the run queued.

    Return what each act returned, or the Conflict it raised, in the order given.
    """
    all_read = threading.Barrier(len(acts), timeout=10)
    outcomes: list = [None] * len(acts)

    def act_at_once(n: int, act) -> None:
        with app.app_context():
            own = db.session()
            try:
                with unit_of_work(own):
                    assert jobs.get_run(own, run_id).status == "queued"
                    all_read.wait()
                    outcomes[n] = act(own)
            except Conflict as refused:
                outcomes[n] = refused
            finally:
                db.session.remove()

    threads = [threading.Thread(target=act_at_once, args=(n, act)) for n, act in enumerate(acts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_of_two_workers_handed_the_same_run_at_once_one_runs_it(app, session, backend):
    if backend == "sqlite":
        pytest.skip("SQLite writers queue at BEGIN IMMEDIATE, so two units of work never hold locks at once")
    run_id = stored_queued_run(session)

    outcomes = at_the_same_moment(
        app, run_id, *(lambda own, w=worker: jobs.start_run(own, run_id, w).worker
                       for worker in ("worker:1", "worker:2"))
    )

    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1 and sum(isinstance(o, Conflict) for o in outcomes) == 1, outcomes
    session.rollback()
    run = session.get(JobRun, run_id)
    assert (run.status, run.worker) == ("running", winners[0])


def test_a_cancel_and_a_claim_at_the_same_moment_leave_one_outcome(app, session, backend):
    if backend == "sqlite":
        pytest.skip("SQLite writers queue at BEGIN IMMEDIATE, so two units of work never hold locks at once")
    run_id = stored_queued_run(session)

    at_the_same_moment(
        app, run_id,
        lambda own: jobs.start_run(own, run_id, "worker:1"),
        lambda own: jobs.request_cancel(own, SYSTEM, run_id),
    )

    session.rollback()
    run = session.get(JobRun, run_id)
    # Either the cancel came first, or the worker did and is asked to stop: never a
    # cancelled run that a worker is running, which a resume would hand to a second.
    assert (run.status, run.cancel_requested) in {("cancelled", True), ("running", True)}, (
        run.status, run.cancel_requested, run.worker
    )
    assert (run.status == "running") == (run.worker == "worker:1")
