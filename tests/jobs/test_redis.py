"""In production Redis holds the job queue and the request counts, shared by every process.

Each test builds two apps on the same database and the same Redis, as the web
server and a worker (or a CLI command) are two processes in production.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from tests.conftest import REDIS_URL, make_app, require_redis
from tests.jobs.conftest import wait_until_finished
from webapp.domain import backfill
from webapp.domain.audit import SYSTEM
from webapp.extensions import db
from webapp.jobs.queue import enqueue_run, start_in_process_consumer
from webapp.models import ActivityEvent, JobRun
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work
from webapp.web.traffic import counts_every_process


@pytest.fixture
def production_apps(app):
    """Two apps sharing the database, and a Redis queue and request counts of their own."""
    require_redis()
    shared = {
        "QUEUE_URL": REDIS_URL,
        "QUEUE_NAME": f"activity-ops-test-{uuid.uuid4().hex[:10]}",
        "RATELIMIT_STORAGE_URI": REDIS_URL,
        "BACKFILL_PEAK_WINDOW": "off",
        "BACKFILL_PAUSE_SECONDS": 0,
        "BACKFILL_MAX_REQUEST_RATE": 1,
    }
    apps = [make_app(app.config["SQLALCHEMY_DATABASE_URI"], **shared) for _ in range(2)]
    yield apps
    for other in apps:
        other.extensions["huey"].flush()
        with other.app_context():
            db.engine.dispose()


@pytest.fixture
def history(make_player, make_tournament, make_match):
    alice, bob = make_player("alice"), make_player("bob")
    return make_match(make_tournament("Cup"), alice, bob, winner="a")


def test_a_backfill_queued_by_one_process_is_run_by_a_consumer_in_another(
    session, production_apps, history
):
    web, worker = production_apps
    with web.app_context():
        web_session = db.session()
        with unit_of_work(web_session):
            run_id = backfill.start_backfill(
                web_session, SYSTEM, backfill.BackfillScope(),
                safeguards=backfill.Safeguards(now=utcnow(), peak_window="off"), pause_seconds=0,
            ).id
        enqueue_run(web, run_id)
        db.session.remove()
    consumer = start_in_process_consumer(worker, workers=1)
    try:
        run = wait_until_finished(session, run_id)
    finally:
        consumer.stop(graceful=True)
    assert run.status == "succeeded", run.error
    assert run.result["events_inserted"] == 2
    assert session.scalar(select(func.count()).select_from(ActivityEvent).filter_by(origin_id=run_id)) == 2


def test_requests_served_by_the_web_server_stop_a_backfill_started_from_the_command_line(
    session, production_apps, history
):
    web, command_line = production_apps
    assert counts_every_process(web) and counts_every_process(command_line)
    client = web.test_client()
    for _ in range(20):
        client.get("/auth/sign-in")

    with command_line.app_context():
        result = command_line.test_cli_runner().invoke(args=["backfill", "run", "--yes"])
        db.session.remove()

    assert result.exit_code == 1, result.output
    assert "above the backfill limit of 1/s" in result.output
    assert "counted per process" not in result.output
    assert session.scalar(select(func.count()).select_from(JobRun)) == 0
