"""Operations pages: job runs with live progress, the backfill with its safeguards, reconciliation.

Runs queued from the dashboard go onto the test app's real queue; no consumer
runs here, so the tests see what was handed to the workers and run it with the
real runner (``execute_run``) when they need it finished.
"""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from tests.conftest import csrf_token_from
from tests.domain.test_recording import won
from webapp.domain import backfill, jobs, reconciliation
from webapp.domain.audit import SYSTEM
from webapp.domain.backfill import BackfillScope
from webapp.domain.recording import record_event
from webapp.jobs.reconcile import run_reconciliation
from webapp.jobs.runner import execute_run
from webapp.models import ActivityEvent, AuditEntry, JobRun, PlayerStats
from webapp.models.base import utcnow
from webapp.models.jobs import BackfillBatch
from webapp.models.reconciliation import ReconciliationRun
from webapp.models.staff import ROLES
from webapp.transaction import unit_of_work
from webapp.web.admin.operations import OPERATIONS_ROLES, duration, typed_number

HX = {"HX-Request": "true"}
JOBS = "/admin/operations/jobs/"
BACKFILL = "/admin/operations/backfill/"
START = "/admin/operations/backfill/start"
RECONCILIATION = "/admin/operations/reconciliation/"
RECONCILE = "/admin/operations/reconciliation/start"


def run_url(run_id: int, suffix: str = "") -> str:
    return f"{JOBS}{run_id}{suffix}"


@pytest.fixture(autouse=True)
def any_hour(app, monkeypatch):
    """Backfills may start at any hour, at any traffic, without pausing, unless a test says otherwise."""
    monkeypatch.setitem(app.config, "BACKFILL_PEAK_WINDOW", "off")
    monkeypatch.setitem(app.config, "BACKFILL_MAX_REQUEST_RATE", 1_000_000.0)
    monkeypatch.setitem(app.config, "BACKFILL_PAUSE_SECONDS", 0.0)


@pytest.fixture
def queue(app):
    """The app's real job queue, empty before and after the test."""
    huey = app.extensions["huey"]
    huey.flush()
    yield huey
    huey.flush()


@pytest.fixture
def history(make_player, make_tournament, make_registration, make_match, make_result):
    """A finished tournament never recorded as events: 6 source records."""
    alice, bob, carol = (make_player(name) for name in ("alice", "bob", "carol"))
    cup = make_tournament("Spring Cup")
    for player, status in ((alice, "checked_in"), (bob, "checked_in"), (carol, "no_show")):
        make_registration(cup, player, status)
    make_match(cup, alice, bob, winner="a", round="SF")
    make_match(cup, alice, bob, winner="b", state="forfeit", round="F")
    make_result(cup, alice)
    return SimpleNamespace(alice=alice, bob=bob, carol=carol, cup=cup)


def fresh(session):
    session.rollback()  # see what the requests committed
    return session


def count(session, model, *where) -> int:
    return fresh(session).scalar(select(func.count()).select_from(model).where(*where))


def audit_actions(session) -> list[str]:
    return list(fresh(session).scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def expected_events(session) -> int:
    found = backfill.preview(session, BackfillScope()).events_to_create
    session.rollback()
    return found


def events_to_create_shown(html: str) -> int:
    match = re.search(r'data-testid="events-to-create" data-value="(\d+)"', html)
    assert match, "the page shows no dry-run report"
    return int(match.group(1))


def token(client, url=BACKFILL) -> str:
    return csrf_token_from(client.get(url).text)


def start_backfill(client, confirm, *, override=False, **scope):
    data = {"csrf_token": token(client), "confirm_events": confirm, **scope}
    if override:
        data["override_peak_window"] = "y"
    return client.post(START, data=data)


def started_run_id(response) -> int:
    assert response.status_code == 303, response.text
    match = re.fullmatch(r".*/admin/operations/jobs/(\d+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def progress_block(client, run_id: int, seen: str = "queued"):
    return client.get(run_url(run_id, "/progress"), query_string={"seen": seen}, headers=HX)


def bar_value(html: str) -> str | None:
    match = re.search(r'aria-valuenow="(\d+)"[^>]*data-testid="job-progress-bar"', html)
    return match.group(1) if match else None


def queued_run(session, kind="backfill", **params) -> int:
    with unit_of_work(session):
        return jobs.queue_run(session, SYSTEM, kind, params, total=10).id


# Who may look, who may act.


@pytest.mark.parametrize("role", ROLES)
def test_only_admins_and_engineers_open_operations_pages(client, session, sign_in, role):
    run_id = queued_run(session)
    with unit_of_work(session):
        reconciliation_id = reconciliation.start_run(session, fix=False).id
        reconciliation.finish_run(session, reconciliation_id, players_fixed=0)
    sign_in(role)
    allowed = role in OPERATIONS_ROLES
    for url in (JOBS, run_url(run_id), run_url(run_id, "/progress"), BACKFILL, f"{BACKFILL}?preview=1",
                RECONCILIATION, f"{RECONCILIATION}runs/{reconciliation_id}"):
        assert client.get(url).status_code == (200 if allowed else 403), url
    menu = client.get("/admin/").text
    assert (JOBS in menu) is allowed and (BACKFILL in menu) is allowed


@pytest.mark.parametrize("role", [r for r in ROLES if r not in OPERATIONS_ROLES])
def test_other_roles_can_start_cancel_or_reconcile_nothing(client, session, sign_in, queue, history, role):
    run_id = queued_run(session)
    sign_in(role)
    csrf = csrf_token_from(client.get("/admin/").text)
    posts = {
        START: {"confirm_events": "1"},
        run_url(run_id, "/cancel"): {},
        RECONCILE: {"mode": "fix"},
    }
    for url, data in posts.items():
        assert client.post(url, data={"csrf_token": csrf, **data}).status_code == 403, url
    assert count(session, JobRun) == 1
    assert fresh(session).get(JobRun, run_id).status == "queued"
    assert queue.pending_count() == 0


# The dry run.


def test_a_dry_run_reports_counts_players_sample_and_stat_changes_and_writes_nothing(
    client, session, sign_in, queue, history
):
    sign_in("engineer")
    before = audit_actions(session)
    response = client.get(BACKFILL, query_string={"preview": "1", "batch_size": "2"})
    assert response.status_code == 200
    html = response.text
    expected = backfill.preview(session, BackfillScope(), batch_size=2)
    session.rollback()
    assert events_to_create_shown(html) == expected.events_to_create > 0
    assert re.search(rf'data-testid="players-affected">{expected.players_affected}<', html)
    assert expected.players_affected == 3
    for event_type in expected.events_by_type:
        assert f'data-event-type="{event_type}"' in html
    assert 'data-event-type="match_won"' in html
    assert html.count('data-testid="sample-event"') == min(10, expected.events_to_create)
    assert 'data-testid="dry-run-stat-changes"' in html and 'data-stat="matches_won"' in html
    assert "nothing was written" in html

    for model in (ActivityEvent, JobRun, BackfillBatch):
        assert count(session, model) == 0, model.__name__
    assert count(session, PlayerStats) == 0
    assert audit_actions(session) == before
    assert queue.pending_count() == 0


def test_with_htmx_the_dry_run_is_only_the_report_block(client, sign_in, history):
    sign_in("admin")
    response = client.get(BACKFILL, query_string={"preview": "1"}, headers=HX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="backfill-report"')
    assert "<html" not in response.text and 'data-testid="start-form"' in response.text
    assert "HX-Request" in response.headers["Vary"]


def test_a_dry_run_of_a_bad_scope_says_what_is_wrong(client, sign_in, history):
    sign_in("engineer")
    response = client.get(BACKFILL, query_string={"preview": "1", "tournament_from": "9", "tournament_to": "3"})
    assert response.status_code == 400
    assert "tournament_from (9) is after tournament_to (3)" in response.text
    response = client.get(BACKFILL, query_string={"preview": "1", "batch_size": "0"}, headers=HX)
    assert response.status_code == 200, "htmx swaps in only a successful response"
    assert response.text.lstrip().startswith('<div id="backfill-report"')
    assert 'data-testid="backfill-refused"' in response.text and "Batch size" in response.text
    assert 'data-testid="start-form"' not in response.text


# Starting a backfill.


def test_a_start_with_the_wrong_number_is_refused_and_queues_nothing(client, session, sign_in, queue, history):
    sign_in("engineer")
    right = expected_events(session)
    response = start_backfill(client, str(right + 1))
    assert response.status_code == 400
    assert f"would create {right:,}" in response.text and "nothing was started" in response.text
    assert events_to_create_shown(response.text) == right, "the dry run is shown again"
    assert count(session, JobRun) == 0
    assert not [a for a in audit_actions(session) if a.startswith("job.")]
    assert queue.pending_count() == 0


def test_a_start_without_a_typed_number_is_refused(client, session, sign_in, queue, history):
    sign_in("engineer")
    for typed in ("", "twelve"):
        response = start_backfill(client, typed)
        assert response.status_code == 400
        assert 'data-testid="backfill-refused"' in response.text
    assert count(session, JobRun) == 0 and queue.pending_count() == 0


def test_a_start_with_the_right_number_queues_an_audited_run_and_hands_it_to_the_workers(
    client, session, sign_in, queue, history
):
    engineer = sign_in("engineer")
    right = expected_events(session)
    response = start_backfill(client, f" {right:,} ", batch_size="2")
    run_id = started_run_id(response)

    run = fresh(session).get(JobRun, run_id)
    assert (run.kind, run.status, run.requested_by_id) == ("backfill", "queued", engineer.id)
    assert run.params["batch_size"] == 2 and run.params["forced_in_peak_window"] is False
    assert run.progress_total == 6
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "job.backfill.queue")).one()
    assert (entry.staff_id, entry.target_type, entry.target_id) == (engineer.id, "job", run_id)
    assert queue.pending_count() == 1, "enqueued once the run was committed"

    page = client.get(run_url(run_id)).text
    assert "queued; its progress is below" in page
    assert engineer.email in page and 'data-status="queued"' in page


def test_inside_the_peak_window_a_start_needs_the_explicit_override(
    app, client, session, sign_in, queue, history, monkeypatch
):
    monkeypatch.setitem(app.config, "BACKFILL_PEAK_WINDOW", "00:00-23:59")
    sign_in("admin")
    dry_run = client.get(BACKFILL, query_string={"preview": "1"}).text
    assert 'data-testid="override-peak-window"' in dry_run
    right = events_to_create_shown(dry_run)

    refused = start_backfill(client, str(right))
    assert refused.status_code == 409
    assert "inside the peak window 00:00-23:59 UTC" in refused.text
    assert count(session, JobRun) == 0 and queue.pending_count() == 0

    run_id = started_run_id(start_backfill(client, str(right), override=True))
    assert fresh(session).get(JobRun, run_id).params["forced_in_peak_window"] is True
    assert queue.pending_count() == 1


def test_outside_the_peak_window_no_override_is_offered(client, sign_in, history):
    sign_in("admin")
    assert 'data-testid="override-peak-window"' not in client.get(BACKFILL, query_string={"preview": "1"}).text


def test_above_the_request_rate_limit_a_start_is_refused_even_with_the_override(
    app, client, session, sign_in, queue, history, monkeypatch
):
    monkeypatch.setitem(app.config, "BACKFILL_MAX_REQUEST_RATE", 0.0)
    sign_in("engineer")
    response = start_backfill(client, str(expected_events(session)), override=True)
    assert response.status_code == 409
    assert "requests/s, above the backfill limit" in response.text
    assert count(session, JobRun) == 0 and queue.pending_count() == 0


def test_a_start_while_another_backfill_is_active_is_refused(client, session, sign_in, queue, history):
    busy = queued_run(session)
    sign_in("engineer")
    response = start_backfill(client, str(expected_events(session)))
    assert response.status_code == 409
    assert f"backfill run {busy} is queued" in response.text
    assert count(session, JobRun) == 1 and queue.pending_count() == 0


def test_starting_needs_the_csrf_token(client, session, sign_in, queue, history):
    sign_in("engineer")
    response = client.post(START, data={"confirm_events": str(expected_events(session))})
    assert response.status_code == 400
    assert count(session, JobRun) == 0 and queue.pending_count() == 0


# A run's page and its live progress.


def test_the_progress_block_polls_while_the_run_is_unfinished_and_stops_when_it_ends(
    client, session, sign_in, queue, history
):
    sign_in("engineer")
    run_id = started_run_id(start_backfill(client, str(expected_events(session)), batch_size="2"))

    queued = progress_block(client, run_id)
    assert f'hx-get="/admin/operations/jobs/{run_id}/progress?seen=queued"' in queued.text
    assert 'hx-trigger="every 1s"' in queued.text and 'hx-swap="outerHTML"' in queued.text
    assert bar_value(queued.text) == "0"
    assert "HX-Trigger" not in queued.headers
    assert queued.headers["Cache-Control"] == "no-store"

    with unit_of_work(session):
        jobs.start_run(session, run_id, "test-worker:1")
        session.get(JobRun, run_id).started_at = utcnow() - timedelta(seconds=20)
        jobs.record_progress(session, run_id, done=2, total=6)
    running_response = progress_block(client, run_id)
    assert running_response.headers["HX-Trigger"] == "job-status-changed", "queued -> running"
    running = running_response.text
    assert 'hx-trigger="every 1s"' in running
    assert bar_value(running) == "33"
    assert re.search(r'data-testid="job-progress-done">2<.*data-testid="job-progress-total">6<', running, re.DOTALL)
    assert 'data-testid="job-rate"' in running and 'data-testid="job-time-left"' in running
    outcome = client.get(run_url(run_id)).text
    assert 'hx-trigger="job-status-changed from:body, every 3s"' in outcome, "the details follow the run too"
    assert "HX-Trigger" not in progress_block(client, run_id, seen="running").headers
    with unit_of_work(session):
        jobs.finish_run(session, run_id, {"events_inserted": 0})

    finished = progress_block(client, run_id, seen="running")
    assert "hx-trigger" not in finished.text and "hx-get" not in finished.text
    assert bar_value(finished.text) == "100"
    assert 'data-status="succeeded"' in finished.text
    assert finished.headers["HX-Trigger"] == "job-status-changed"
    assert "hx-trigger" not in client.get(run_url(run_id)).text, "a finished run's page polls nothing"


def test_the_page_of_a_backfill_prepared_apart_says_how_many_batches_were(
    app, client, session, sign_in, queue, history, monkeypatch
):
    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_PROCESS_FROM", 0)
    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_START", "fork")
    sign_in("admin")
    run_id = started_run_id(start_backfill(client, str(expected_events(session)), batch_size="2"))
    run = execute_run(fresh(session), run_id)
    assert run.status == "succeeded", run.error

    page = client.get(run_url(run_id)).text
    assert re.search(r'data-testid="batches-prepared-apart">3<', page), "6 records in batches of 2"


def test_the_page_of_a_finished_backfill_shows_its_ledger_totals_and_parity(
    client, session, sign_in, queue, history
):
    admin = sign_in("admin")
    right = expected_events(session)
    run_id = started_run_id(start_backfill(client, str(right), batch_size="2"))
    assert execute_run(fresh(session), run_id).status == "succeeded"

    page = client.get(run_url(run_id)).text
    assert page.count('data-testid="ledger-line"') == 3, "6 records in batches of 2"
    assert re.search(rf'data-testid="events-created">{right}<', page)
    assert 'data-testid="batches-prepared-apart"' not in page, "a short run is prepared by the worker"
    assert 'data-testid="parity" data-ok="true"' in page
    assert "checked when the run ended" in page
    assert admin.email in page
    assert 'data-testid="rollback-form"' in page and 'data-testid="cancel-run"' not in page

    rechecked = client.get(run_url(run_id), query_string={"recheck": "1"}).text
    assert "checked just now" in rechecked and 'data-ok="true"' in rechecked

    outcome = client.get(run_url(run_id), headers=HX)
    assert outcome.text.lstrip().startswith('<div id="job-outcome"') and "<html" not in outcome.text


def test_a_failed_run_shows_its_error_and_traceback(client, session, sign_in):
    run_id = queued_run(session, "reconcile", player_id="not-a-number")
    assert execute_run(session, run_id).status == "failed"
    sign_in("engineer")
    page = client.get(run_url(run_id)).text
    assert 'data-testid="job-error"' in page and "Traceback (most recent call last)" in page
    assert 'data-testid="resume-run"' in page
    assert "system (command line or schedule)" in page


def test_the_runs_list_is_newest_first_and_filters_by_kind(client, session, sign_in):
    ids = [queued_run(session, kind) for kind in ("reconcile", "backfill", "reconcile")]
    sign_in("engineer")
    listed = [int(n) for n in re.findall(r'data-testid="job-run" data-run-id="(\d+)"', client.get(JOBS).text)]
    assert listed == ids[::-1]
    response = client.get(JOBS, query_string={"kind": "reconcile"}, headers=HX)
    assert response.text.lstrip().startswith('<div id="job-runs"')
    assert re.findall(r'data-run-id="(\d+)" data-kind="(\w+)"', response.text) == [
        (str(ids[2]), "reconcile"), (str(ids[0]), "reconcile")
    ]
    assert client.get(JOBS, query_string={"kind": "nonsense"}).status_code == 400


# Cancel, resume, roll back.


def test_cancelling_needs_the_csrf_token_and_a_queued_run_is_cancelled_at_once(
    client, session, sign_in, queue, history
):
    engineer = sign_in("engineer")
    run_id = started_run_id(start_backfill(client, str(expected_events(session))))
    assert client.post(run_url(run_id, "/cancel")).status_code == 400
    assert fresh(session).get(JobRun, run_id).status == "queued"

    response = client.post(run_url(run_id, "/cancel"), data={"csrf_token": token(client, run_url(run_id))},
                           follow_redirects=True)
    assert "was cancelled before it started" in response.text
    assert fresh(session).get(JobRun, run_id).status == "cancelled"
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "job.backfill.cancel")).one()
    assert (entry.staff_id, entry.target_id) == (engineer.id, run_id)


def test_a_running_run_is_asked_to_stop_at_its_next_batch(client, session, sign_in):
    run_id = queued_run(session)
    with unit_of_work(session):
        jobs.start_run(session, run_id, "test-worker:1")
    sign_in("engineer")
    response = client.post(run_url(run_id, "/cancel"), data={"csrf_token": token(client, run_url(run_id))},
                           follow_redirects=True)
    assert "will stop at the end of its current batch" in response.text
    run = fresh(session).get(JobRun, run_id)
    assert (run.status, run.cancel_requested) == ("running", True)
    assert 'data-status="cancelling"' in response.text
    again = client.post(run_url(run_id, "/cancel"), data={"csrf_token": token(client, run_url(run_id))},
                        follow_redirects=True)
    assert 'data-testid="cancel-run"' not in again.text


def test_a_running_restore_is_said_to_be_unable_to_stop_part_way(client, session, sign_in):
    run_id = queued_run(session, "archive_restore", file_id=1, url="unused")
    with unit_of_work(session):
        jobs.start_run(session, run_id, "test-worker:1")
    sign_in("engineer")

    page = client.get(run_url(run_id)).text
    assert "cannot stop part way" in page and "end of its current batch" not in page
    response = client.post(run_url(run_id, "/cancel"), data={"csrf_token": csrf_token_from(page)},
                           follow_redirects=True)

    assert f"Run {run_id} cannot stop part way" in response.text
    assert "requested: it cannot stop part way" in response.text
    assert "end of its current batch" not in response.text


def test_a_running_reconciliation_is_said_to_stop_before_its_next_repair_batch(client, session, sign_in):
    run_id = queued_run(session, "reconcile", fix=True)
    with unit_of_work(session):
        jobs.start_run(session, run_id, "test-worker:1")
    sign_in("engineer")

    response = client.post(run_url(run_id, "/cancel"), data={"csrf_token": token(client, run_url(run_id))},
                           follow_redirects=True)

    assert f"Run {run_id} will stop before its next repair batch" in response.text


def test_resuming_needs_the_csrf_token_and_queues_the_run_again(
    app, client, session, sign_in, queue, history, monkeypatch
):
    sign_in("engineer")
    run_id = started_run_id(start_backfill(client, str(expected_events(session))))
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, run_id)
    queue.flush()
    assert client.post(run_url(run_id, "/resume")).status_code == 400
    assert fresh(session).get(JobRun, run_id).status == "cancelled"

    monkeypatch.setitem(app.config, "BACKFILL_PEAK_WINDOW", "00:00-23:59")
    page = client.get(run_url(run_id)).text
    assert 'id="resume-override-peak"' in page
    refused = client.post(run_url(run_id, "/resume"), data={"csrf_token": csrf_token_from(page)},
                          follow_redirects=True)
    assert "Nothing was done" in refused.text and "inside the peak window" in refused.text
    assert fresh(session).get(JobRun, run_id).status == "cancelled" and queue.pending_count() == 0

    response = client.post(
        run_url(run_id, "/resume"),
        data={"csrf_token": csrf_token_from(page), "override_peak_window": "y"},
        follow_redirects=True,
    )
    assert "is queued again" in response.text
    assert fresh(session).get(JobRun, run_id).status == "queued"
    assert "job.backfill.resume" in audit_actions(session)
    assert queue.pending_count() == 1


def test_a_failed_fix_is_not_resumed_while_another_fix_is_queued(client, session, sign_in, queue):
    sign_in("engineer")
    csrf = token(client, RECONCILIATION)
    first = started_run_id(client.post(RECONCILE, data={"csrf_token": csrf, "mode": "fix"}))
    with unit_of_work(fresh(session)):
        jobs.fail_run(session, first, "worker stopped")
    second = started_run_id(client.post(RECONCILE, data={"csrf_token": csrf, "mode": "fix"}))
    queue.flush()

    refused = client.post(run_url(first, "/resume"),
                          data={"csrf_token": token(client, run_url(first))}, follow_redirects=True)

    assert "Nothing was done" in refused.text
    assert f"reconciliation run {second} is already queued" in refused.text
    assert fresh(session).get(JobRun, first).status == "failed" and queue.pending_count() == 0
    assert "job.reconcile.resume" not in audit_actions(session)


def test_rolling_back_needs_the_csrf_token_and_the_number_of_events(client, session, sign_in, queue, history):
    admin = sign_in("admin")
    right = expected_events(session)
    run_id = started_run_id(start_backfill(client, str(right)))
    assert execute_run(fresh(session), run_id).status == "succeeded"
    queue.flush()
    page = client.get(run_url(run_id)).text
    assert re.search(rf'data-testid="rollback-events">{right}<', page)

    assert client.post(run_url(run_id, "/rollback"), data={"confirm_events": str(right)}).status_code == 400
    wrong = client.post(run_url(run_id, "/rollback"),
                        data={"csrf_token": csrf_token_from(page), "confirm_events": str(right - 1)},
                        follow_redirects=True)
    assert f"would delete {right:,}" in wrong.text and "Nothing was done" in wrong.text
    assert count(session, JobRun, JobRun.kind == "backfill_rollback") == 0
    assert queue.pending_count() == 0

    response = client.post(run_url(run_id, "/rollback"),
                           data={"csrf_token": csrf_token_from(page), "confirm_events": str(right)})
    rollback_id = started_run_id(response)
    rollback = fresh(session).get(JobRun, rollback_id)
    assert (rollback.kind, rollback.params["run_id"], rollback.requested_by_id) == (
        "backfill_rollback", run_id, admin.id)
    assert "job.backfill_rollback.queue" in audit_actions(session)
    assert queue.pending_count() == 1

    assert execute_run(fresh(session), rollback_id).status == "succeeded"
    assert count(session, ActivityEvent) == 0
    assert "backfill.rollback" in audit_actions(session)
    rolled_back = client.get(run_url(run_id)).text
    assert 'data-testid="rolled-back"' in rolled_back and 'data-testid="rollback-form"' not in rolled_back
    assert re.search(rf'data-testid="events-deleted">{right}<', client.get(run_url(rollback_id)).text)


# Reconciliation.


def drift_alice(session, make_player):
    """Alice won one match, but her stored stats say seven."""
    alice = make_player("alice")
    with unit_of_work(session):
        record_event(session, won(alice))
    session.execute(text("UPDATE player_stats SET matches_won = 7"))
    session.commit()
    return alice


def stored_wins(session) -> set[int]:
    return set(fresh(session).scalars(select(PlayerStats.matches_won)))


def test_a_check_records_drift_without_repairing_it_and_a_fix_repairs_it(
    client, session, sign_in, queue, make_player
):
    alice = drift_alice(session, make_player)
    engineer = sign_in("engineer")
    csrf = token(client, RECONCILIATION)

    check_id = started_run_id(client.post(RECONCILE, data={"csrf_token": csrf, "mode": "check"}))
    check = fresh(session).get(JobRun, check_id)
    assert (check.kind, check.params["fix"], check.requested_by_id) == ("reconcile", False, engineer.id)
    assert queue.pending_count() == 1
    assert execute_run(session, check_id).status == "succeeded"
    assert stored_wins(session) == {7}

    job_page = client.get(run_url(check_id)).text
    link = re.search(r'href="(/admin/operations/reconciliation/runs/(\d+))" data-testid="reconciliation-run-link"',
                     job_page)
    assert link, "the job's page links to the reconciliation run"
    drift = client.get(link.group(1)).text
    assert f'data-testid="drift-player" data-player-id="{alice.id}"' in drift
    assert 'data-scope="all" data-stat="matches_won"' in drift and alice.public_id in drift

    fix_id = started_run_id(client.post(RECONCILE, data={"csrf_token": csrf, "mode": "fix"}))
    assert fresh(session).get(JobRun, fix_id).params["fix"] is True
    assert execute_run(session, fix_id).status == "succeeded"
    assert stored_wins(session) == {1}
    assert audit_actions(session).count("job.reconcile.queue") == 2

    history = client.get(RECONCILIATION).text
    rows = re.findall(r'data-testid="reconciliation-run" data-run-id="\d+" data-status="(\w+)"', history)
    assert rows == ["succeeded", "succeeded"]
    fixed = re.findall(r'data-testid="players-fixed">(\d+)<', history)
    assert fixed == ["1", "0"], "newest first: the fix repaired alice, the check repaired nobody"


def test_starting_a_check_needs_the_csrf_token_and_a_known_mode(client, session, sign_in, queue):
    sign_in("admin")
    assert client.post(RECONCILE, data={"mode": "fix"}).status_code == 400
    response = client.post(RECONCILE, data={"csrf_token": token(client, RECONCILIATION), "mode": "delete"},
                           follow_redirects=True)
    assert "Nothing was started" in response.text
    assert count(session, JobRun) == 0 and queue.pending_count() == 0


def test_a_fix_waits_for_another_fix_but_a_check_may_run_beside_it(client, session, sign_in, queue):
    sign_in("engineer")
    csrf = token(client, RECONCILIATION)
    first = started_run_id(client.post(RECONCILE, data={"csrf_token": csrf, "mode": "fix"}))
    refused = client.post(RECONCILE, data={"csrf_token": csrf, "mode": "fix"}, follow_redirects=True)
    assert f"reconciliation run {first} is already queued" in refused.text
    assert 'data-testid="active-reconciliations"' in refused.text
    assert count(session, JobRun) == 1 and queue.pending_count() == 1
    started_run_id(client.post(RECONCILE, data={"csrf_token": csrf, "mode": "check"}))
    assert count(session, JobRun) == 2 and queue.pending_count() == 2


def test_drift_details_are_paged_by_player(client, session, sign_in, make_player):
    players = [make_player() for _ in range(27)]
    with unit_of_work(session):
        for n, player in enumerate(players):
            record_event(session, won(player, match_id=n + 1))
    session.execute(text("UPDATE player_stats SET matches_won = 5"))
    session.commit()
    run_id = run_reconciliation(session).run_id
    assert count(session, ReconciliationRun) == 1
    sign_in("engineer")

    first = client.get(f"{RECONCILIATION}runs/{run_id}").text
    shown = re.findall(r'data-testid="drift-player" data-player-id="(\d+)"', first)
    assert shown == [str(p.id) for p in players[:25]]
    more = re.search(r'href="([^"]+)" data-testid="more-drift"', first)
    assert more
    rest = client.get(more.group(1).replace("&amp;", "&"), headers=HX)
    assert "<html" not in rest.text
    assert re.findall(r'data-testid="drift-player" data-player-id="(\d+)"', rest.text) == [
        str(p.id) for p in players[25:]
    ]
    assert 'data-testid="more-drift"' not in rest.text


# Small pieces.


@pytest.mark.parametrize("typed, number", [("1234", 1234), ("1,234", 1234), (" 12 ", 12), ("1 234", 1234),
                                           ("", None), ("-3", None), ("12a", None), ("1e3", None)])
def test_typed_numbers_allow_thousands_separators_only(typed, number):
    assert typed_number(typed) == number


@pytest.mark.parametrize("seconds, said", [(0.4, "under a second"), (4.6, "5 s"), (200, "3 min 20 s"),
                                           (7500, "2 h 05 min")])
def test_durations_read_like_people_say_them(seconds, said):
    assert duration(seconds) == said
