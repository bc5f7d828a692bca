"""``flask backfill``: dry run, confirmation, safeguards, exit codes, resume, rollback, ledger."""

from __future__ import annotations

import getpass
import re
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import T0
from tests.jobs.test_backfill_kill import worker_env
from webapp.config import PROJECT_ROOT
from webapp.domain import jobs
from webapp.domain.recording import NewEvent, record_event
from webapp.models import ActivityEvent, AuditEntry, Base, JobRun
from webapp.transaction import unit_of_work


@pytest.fixture
def quiet_hours(app, monkeypatch):
    """No peak window, no pause and no traffic limit, whatever the time of day the tests run at.

    The request rate is the process's own: web tests run just before would count as traffic.
    """
    monkeypatch.setitem(app.config, "BACKFILL_PEAK_WINDOW", "off")
    monkeypatch.setitem(app.config, "BACKFILL_MAX_REQUEST_RATE", 1_000_000.0)
    monkeypatch.setitem(app.config, "BACKFILL_PAUSE_SECONDS", 0)


@pytest.fixture
def history(session, make_player, make_tournament, make_registration, make_match, make_result):
    alice, bob, gina = make_player("alice"), make_player("bob"), make_player("gina")
    cup = make_tournament("Cup")
    make_registration(cup, alice)
    make_registration(cup, bob)
    make_registration(cup, gina, "no_show")
    match = make_match(cup, alice, bob, winner="a")
    make_match(cup, alice, bob, winner="b", state="forfeit", round="F")
    make_result(cup, alice)
    return match


def count(session, model) -> int:
    n = session.scalar(select(func.count()).select_from(model))
    session.rollback()
    return n


def row_counts(session) -> dict[str, int]:
    return {table.name: count(session, table) for table in Base.metadata.sorted_tables}


def backfill(runner, *args, input=None):
    return runner.invoke(args=["backfill", *args], input=input)


def test_a_dry_run_prints_the_report_and_writes_nothing(runner, session, history, quiet_hours):
    before = row_counts(session)
    result = backfill(runner, "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "events to create             12" in result.output
    assert "players affected              3" in result.output
    assert "forfeits (no won/lost)        1" in result.output
    assert "no-shows (no completion)      1" in result.output
    assert "match_forfeit_won                 1" in result.output
    assert "matches_won                      +1" in result.output
    assert "sample events:" in result.output
    assert "dry run: nothing was written" in result.output
    assert row_counts(session) == before


def test_a_run_asks_for_confirmation_and_does_nothing_without_it(
    runner, session, history, quiet_hours
):
    result = backfill(runner, "run", input="n\n")
    assert result.exit_code == 1
    assert "Create 12 events in batches of 500?" in result.output
    assert "not confirmed; nothing was started" in result.output
    assert count(session, JobRun) == 0
    assert count(session, ActivityEvent) == 0


def test_a_confirmed_run_records_the_events_and_reports_parity(
    runner, session, history, quiet_hours
):
    result = backfill(runner, "run", "--batch-size", "2", input="y\n")
    assert result.exit_code == 0, result.output
    assert "run 1 succeeded" in result.output
    assert "events_inserted: 12" in result.output
    assert "parity check: every count matches the source tables" in result.output
    assert count(session, ActivityEvent) == 12
    assert session.get(JobRun, 1).params["batch_size"] == 2


def test_with_yes_the_run_starts_without_a_dry_run_and_still_counts_its_records(
    runner, session, history, quiet_hours
):
    result = backfill(runner, "run", "--yes")
    assert result.exit_code == 0, result.output
    assert "events to create" not in result.output, "no dry run: it would derive every event twice"
    assert "Create 12 events" not in result.output
    assert "events_inserted: 12" in result.output
    assert "records refused               0" in result.output
    run = session.get(JobRun, 1)
    assert (run.progress_done, run.progress_total) == (6, 6)


def test_inside_the_peak_window_a_run_is_refused_unless_forced(
    app, runner, session, history, quiet_hours, monkeypatch
):
    monkeypatch.setitem(app.config, "BACKFILL_PEAK_WINDOW", "00:00-23:59")
    refused = backfill(runner, "run", "--yes")
    assert refused.exit_code == 1
    assert "inside the peak window 00:00-23:59 UTC" in refused.output
    assert "(--force)" in refused.output
    assert count(session, JobRun) == 0
    forced = backfill(runner, "run", "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    assert session.get(JobRun, 1).params["forced_in_peak_window"] is True


def test_a_run_is_refused_while_traffic_is_above_the_limit(
    app, client, runner, session, history, quiet_hours, monkeypatch
):
    monkeypatch.setitem(app.config, "BACKFILL_MAX_REQUEST_RATE", 1)
    for _ in range(20):
        client.get("/")
    result = backfill(runner, "run", "--yes", "--force")
    assert result.exit_code == 1
    assert "above the backfill limit of 1/s" in result.output
    assert count(session, JobRun) == 0


def test_a_bad_scope_is_refused_before_anything_is_written(runner, session, history, quiet_hours):
    result = backfill(runner, "run", "--yes", "--tournament-from", "9", "--tournament-to", "3")
    assert result.exit_code == 1
    assert "tournament_from (9) is after tournament_to (3)" in result.output
    assert backfill(runner, "run", "--before", "next week").exit_code == 2
    assert count(session, JobRun) == 0


def test_a_run_with_refused_records_exits_3_and_names_the_differences(
    runner,
    session,
    history,
    quiet_hours,
    make_player,
    make_team,
    make_tournament,
    make_registration,
    make_match,
):
    late = make_team("Late", [make_player("ivan")], joined_at=T0 + timedelta(days=30))
    early = make_team("Early", [make_player("judy")])
    league = make_tournament("League", is_team_based=True)
    make_match(league, late, early, winner="b")
    result = backfill(runner, "run", "--yes")
    assert result.exit_code == 3, result.output
    assert "records refused               1" in result.output
    assert "had no members" in result.output
    assert "parity check flagged differences" in result.output
    assert (
        "completed matches x 2 sides: match_won + match_lost: expected 4, found 2" in result.output
    )


def test_queued_then_stale_then_resumed(runner, session, history, quiet_hours):
    queued = backfill(runner, "run", "--yes", "--queue")
    assert queued.exit_code == 0, queued.output
    assert "backfill run 1 queued" in queued.output
    with unit_of_work(session):
        jobs.start_run(session, 1, "gone-host:1")
        jobs.fail_stale_runs(session, timedelta(seconds=0), now=T0 + timedelta(days=3650))
    resumed = backfill(runner, "resume", "1")
    assert resumed.exit_code == 0, resumed.output
    assert "run 1 succeeded" in resumed.output
    assert count(session, ActivityEvent) == 12
    again = backfill(runner, "resume", "1")
    assert again.exit_code == 1
    assert "only failed or cancelled runs can be resumed" in again.output


def test_show_prints_the_ledger_batch_by_batch_and_the_parity_check(
    runner, session, history, quiet_hours
):
    assert backfill(runner, "run", "--yes", "--batch-size", "3").exit_code == 0
    result = backfill(runner, "show", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "backfill run 1: succeeded, all history"
    assert [line.split()[0] for line in lines if line.strip()[:1].isdigit()] == ["1", "2"]
    assert any(line.split()[:3] == ["total", "6", "12"] for line in lines)
    assert "parity (checked at the end of the run): ok" in result.output
    assert backfill(runner, "show", "99").exit_code == 1


def test_rollback_removes_the_runs_events_after_confirmation(runner, session, history, quiet_hours):
    assert backfill(runner, "run", "--yes").exit_code == 0
    declined = backfill(runner, "rollback", "1", input="n\n")
    assert declined.exit_code == 1
    assert "12 events of 3 players to delete" in declined.output
    assert count(session, ActivityEvent) == 12
    result = backfill(runner, "rollback", "1", "--yes")
    assert result.exit_code == 0, result.output
    assert "events_deleted: 12" in result.output
    assert count(session, ActivityEvent) == 0
    shown = backfill(runner, "show", "1", "--recheck")
    assert "rolled back by run 2 (succeeded)" in shown.output
    assert "FLAG events this run inserted, still stored: expected 12, found 0" in shown.output


def test_rollback_is_refused_with_the_reason_when_a_dispute_reversed_an_event(
    runner, session, history, quiet_hours
):
    assert backfill(runner, "run", "--yes").exit_code == 0
    won = session.scalars(
        select(ActivityEvent).where(ActivityEvent.event_type == "match_won")
    ).one()
    with unit_of_work(session):
        record_event(
            session,
            NewEvent(
                player_id=won.player_id,
                event_type="match_won_reversed",
                occurred_at=T0 + timedelta(days=5),
                source_model="dispute",
                source_id=1,
                origin="dispute",
                reverses_event_id=won.id,
                metadata={"match_id": history.id},
            ),
        )
    result = backfill(runner, "rollback", "1", "--yes")
    assert result.exit_code == 1
    assert (
        f"event {won.id} (match_won of player {won.player_id}) was reversed by event"
        in result.output
    )
    assert "nothing was deleted" in result.output
    assert count(session, ActivityEvent) == 13
    assert count(session, JobRun) == 1  # no rollback run was even queued


def test_jobs_resume_keeps_a_backfill_to_its_safeguards(runner, session, app, history, quiet_hours):
    assert backfill(runner, "run", "--yes", "--queue").exit_code == 0
    with unit_of_work(session):
        jobs.start_run(session, 1, "gone-host:1")
        jobs.fail_stale_runs(session, timedelta(seconds=0), now=T0 + timedelta(days=3650))
    app.config["BACKFILL_PEAK_WINDOW"] = "00:00-23:59"

    refused = runner.invoke(args=["jobs", "resume", "1"])

    assert refused.exit_code == 1
    assert "inside the peak window" in refused.output
    assert session.get(JobRun, 1).status == "failed"
    assert count(session, ActivityEvent) == 0

    forced = runner.invoke(args=["jobs", "resume", "1", "--force"])
    assert forced.exit_code == 0, forced.output
    assert count(session, ActivityEvent) == 12


def test_with_requests_counted_per_process_the_command_line_says_it_cannot_see_the_web_traffic(
    runner, session, history, quiet_hours
):
    result = backfill(runner, "run", "--yes")
    assert result.exit_code == 0, result.output
    assert "requests are counted per process (RATELIMIT_STORAGE_URI=memory://)" in result.output
    assert "cannot see the web server's request rate" in result.output


def test_a_run_started_from_the_command_line_says_which_system_account_started_it(
    app, runner, client, sign_in, session, history, quiet_hours
):
    result = backfill(runner, "run", "--yes")
    assert result.exit_code == 0, result.output

    run = session.get(JobRun, 1)
    who = f"command line ({getpass.getuser()}@{socket.gethostname()})"
    assert (run.requested_by_id, run.requested_via) == (None, who)
    queued = session.scalars(select(AuditEntry).where(AuditEntry.action == "job.backfill.queue")).one()
    assert (queued.staff_id, queued.details["via"]) == (None, who)
    sign_in("engineer")
    for page in ("/admin/operations/jobs/", f"/admin/operations/jobs/{run.id}"):
        assert f'data-testid="job-requested-by">{who}<' in client.get(page).text


def test_on_the_command_line_a_long_backfill_forks_its_preparation_process(app, session, history):
    """A real `flask backfill run`: its progress bar starts no thread, so the process is forked."""
    env = {**worker_env(app), "BACKFILL_PREPARATION_PROCESS_FROM": "0", "BACKFILL_PAUSE_SECONDS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "webapp", "backfill", "run", "--yes", "--force",
         "--batch-size", "2"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # A new interpreter would be ready only after the worker had prepared these few batches itself.
    batches = re.search(r"^  batches: (\d+)$", done.stdout, re.MULTILINE)
    apart = re.search(r"^  batches_prepared_apart: (\d+)$", done.stdout, re.MULTILINE)
    assert int(batches[1]) == int(apart[1]) > 1, done.stdout
    assert "parity_ok: True" in done.stdout
