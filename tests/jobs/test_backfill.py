"""Backfill: history becomes the events live traffic would have made, in resumable batches."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from tests.conftest import T0
from tests.jobs.conftest import wait_until_finished
from webapp.domain import archive, backfill, jobs
from webapp.domain.audit import SYSTEM
from webapp.domain.backfill import BackfillRefused, BackfillScope, Safeguards
from webapp.domain.demo import generate_demo_data
from webapp.domain.errors import Conflict, Invalid
from webapp.domain.projection import expected_stats
from webapp.domain.reconciliation import find_drift
from webapp.domain.recording import NewEvent, record_event
from webapp.domain.results import record_match_result
from webapp.extensions import db
from webapp.jobs.queue import enqueue_run, start_in_process_consumer
from webapp.jobs.runner import execute_run
from webapp.models import (
    ActivityEvent,
    AuditEntry,
    Base,
    JobRun,
    Match,
    PlayerStats,
    TeamMembership,
)
from webapp.models.base import utcnow
from webapp.transaction import run_in_unit_of_work, unit_of_work
from webapp.web.traffic import current_request_rate

OFF_PEAK = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
PEAK = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)
QUIET = Safeguards(now=OFF_PEAK)
ALL_HISTORY = BackfillScope()


# Helpers: start and run backfills the way the CLI and the dashboard do.


def start(
    session, scope=ALL_HISTORY, *, batch_size=500, safeguards=QUIET, pause_seconds=0, **options
) -> int:
    with unit_of_work(session):
        return backfill.start_backfill(
            session,
            SYSTEM,
            scope,
            safeguards=safeguards,
            batch_size=batch_size,
            pause_seconds=pause_seconds,
            **options,
        ).id


def run_backfill(session, scope=ALL_HISTORY, *, batch_size=500, listeners=None) -> JobRun:
    run = execute_run(session, start(session, scope, batch_size=batch_size), listeners=listeners)
    session.rollback()
    return run


def resume(session, run_id) -> JobRun:
    with unit_of_work(session):
        backfill.resume_backfill(session, SYSTEM, run_id, safeguards=QUIET)
    run = execute_run(session, run_id)
    session.rollback()
    return run


def roll_back(session, run_id, batch_size=500) -> JobRun:
    with unit_of_work(session):
        rollback_id = backfill.start_rollback(session, SYSTEM, run_id, batch_size=batch_size).id
    run = execute_run(session, rollback_id)
    session.rollback()
    return run


def events(session, **where) -> list[ActivityEvent]:
    statement = select(ActivityEvent).filter_by(**where).order_by(ActivityEvent.id)
    found = list(session.scalars(statement))
    session.rollback()
    return found


def event_count(session, **where) -> int:
    n = session.scalar(select(func.count()).select_from(ActivityEvent).filter_by(**where))
    session.rollback()
    return n


def types_of(session, player, **where) -> list[str]:
    return sorted(e.event_type for e in events(session, player_id=player.id, **where))


def stored_stats(session) -> dict[tuple[int, str], dict[str, int]]:
    found = {(s.player_id, s.scope): s.as_dict() for s in session.scalars(select(PlayerStats))}
    session.rollback()
    return {key: values for key, values in found.items() if any(values.values())}


def assert_stats_exact(session) -> None:
    """Stats agree with the events, stat by stat, and reconciliation finds no drift."""
    assert stored_stats(session) == expected_stats(session)
    assert find_drift(session).drifts == []
    session.rollback()


def ledger(session, run_id):
    lines = backfill.ledger(session, run_id)
    session.rollback()
    return lines


def parity(session, run_id):
    report = backfill.parity_check(session, run_id)
    session.rollback()
    return report


def assert_every_batch_whole(session, run_id) -> None:
    """Each committed ledger line's events are all stored: no batch was half written."""
    for line in ledger(session, run_id):
        if not line.committed or line.first_event_id is None:
            continue
        stored = session.scalar(
            select(func.count())
            .select_from(ActivityEvent)
            .where(
                ActivityEvent.origin == "backfill",
                ActivityEvent.origin_id == run_id,
                ActivityEvent.id.between(line.first_event_id, line.last_event_id),
            )
        )
        assert stored == line.counts.events_inserted, f"batch {line.batch_no}"
    session.rollback()


# The rules: the same taxonomy and services as live traffic.


def test_completed_matches_give_won_and_lost_and_forfeits_only_forfeit_events(session, history):
    run = run_backfill(session)
    assert run.status == "succeeded", run.error
    by_source = {
        (e.source_id, e.player_id): e.event_type for e in events(session, source_model="match")
    }
    alice, bob = history.players["alice"].id, history.players["bob"].id
    assert by_source[(history.won_match.id, alice)] == "match_won"
    assert by_source[(history.won_match.id, bob)] == "match_lost"
    assert by_source[(history.forfeit.id, bob)] == "match_forfeit_won"
    assert by_source[(history.forfeit.id, alice)] == "match_forfeit_lost"
    assert run.result["rejected_forfeit"] == 1
    assert all(e.origin == "backfill" and e.origin_id == run.id for e in events(session))


def test_undecided_matches_give_no_events_and_are_counted_as_skipped(session, history):
    run = run_backfill(session)
    assert event_count(session, source_model="match", source_id=history.scheduled.id) == 0
    assert run.result["skipped_undecided"] == 1


def test_no_shows_and_withdrawals_never_complete_the_tournament(session, history):
    run = run_backfill(session)
    p = history.players
    assert types_of(session, p["gina"]) == ["tournament_registered"]
    assert types_of(session, p["hank"]) == ["tournament_registered"]
    assert "tournament_completed" in types_of(session, p["bob"])
    assert run.result["rejected_no_show"] == 2


def test_team_results_reach_the_members_at_the_time(session, history):
    run_backfill(session)
    p = history.players
    for member in ("carol", "dave"):
        assert types_of(session, p[member], tournament_id=history.cup.id) == [
            "match_won",
            "tournament_checked_in",
            "tournament_completed",
            "tournament_registered",
            "tournament_won",
        ]
        assert {e.team_id for e in events(session, player_id=p[member].id)} == {history.red.id}
    assert types_of(session, p["frank"]) == []
    assert types_of(session, p["erin"]) == []


def test_private_tournaments_stay_private(session, history):
    run_backfill(session)
    cup_events = events(session, tournament_id=history.cup.id)
    assert cup_events and all(e.is_private for e in cup_events)
    carol = history.players["carol"].id
    stats = stored_stats(session)
    assert stats[(carol, "all")]["team_tournament_wins"] == 1
    assert (carol, "public") not in stats


def test_the_parity_check_flags_an_event_of_a_private_tournament_left_public(session, history):
    run = run_backfill(session)
    assert run.result["parity_ok"], run.result["parity_flags"]
    leaked = events(session, tournament_id=history.cup.id)[0]
    with unit_of_work(session):
        session.execute(
            sa.update(ActivityEvent).where(ActivityEvent.id == leaked.id).values(is_private=False)
        )
    parity = backfill.parity_check(session, run.id)
    assert parity.flags == [
        "events of this run in private tournaments not marked private: expected 0, found 1"
    ]


def test_the_backfill_gives_exactly_the_events_and_stats_live_traffic_gave(session):
    """Demo data is recorded through the live services; wiped and backfilled, it comes back."""
    with unit_of_work(session):
        generate_demo_data(session, scale=0.01, seed=11)
    columns = (
        "player_id",
        "event_type",
        "source_model",
        "source_id",
        "occurred_at",
        "team_id",
        "tournament_id",
        "is_private",
        "details",
    )

    def facts() -> set[tuple]:
        found = {
            tuple(repr(getattr(e, c)) for c in columns)
            for e in session.scalars(select(ActivityEvent))
        }
        session.rollback()
        return found

    live_facts, live_stats = facts(), stored_stats(session)
    with unit_of_work(session):
        for table in ("data_quality_findings", "activity_events", "player_stats"):
            session.execute(sa.text(f"DELETE FROM {table}"))

    run = run_backfill(session, batch_size=97)
    assert run.status == "succeeded", run.error
    assert facts() == live_facts
    assert stored_stats(session) == live_stats
    assert run.result["parity_ok"], run.result["parity_flags"]
    assert run.result["events_inserted"] == len(live_facts)
    assert_stats_exact(session)


def test_a_backfill_beside_live_traffic_reporting_the_same_matches_gives_each_fact_once(
    app, session
):
    """Live reports and the backfill race on the same matches; neither loses or doubles a fact."""
    with unit_of_work(session):
        generate_demo_data(session, scale=0.01, seed=13)
    live_total = event_count(session)
    with unit_of_work(session):
        for table in ("data_quality_findings", "activity_events", "player_stats"):
            session.execute(sa.text(f"DELETE FROM {table}"))
    decided = list(
        session.scalars(
            select(Match.id)
            .where(Match.state.in_(("completed", "forfeit")))
            .order_by(Match.id.desc())
        )
    )
    session.rollback()
    run_id = start(session, batch_size=25)
    failures: list[BaseException] = []

    def report_live() -> None:
        with app.app_context():
            live = db.session()
            try:
                for match_id in decided:  # newest first, meeting the backfill coming the other way
                    run_in_unit_of_work(live, lambda s, m=match_id: record_match_result(s, m))
            except Exception as exc:  # noqa: BLE001 - the main thread reports it
                failures.append(exc)

    reporter = threading.Thread(target=report_live)
    reporter.start()
    run = execute_run(session, run_id)
    reporter.join(timeout=120)
    session.rollback()
    assert not failures, failures
    assert run.status == "succeeded", run.error
    assert event_count(session) == live_total
    assert run.result["events_inserted"] + event_count(session, origin="live") == live_total
    assert run.result["parity_ok"], run.result["parity_flags"]
    assert_stats_exact(session)


# The dry run.


def _row_counts(session) -> dict[str, int]:
    counts = {
        table.name: session.scalar(select(func.count()).select_from(table))
        for table in Base.metadata.sorted_tables
    }
    session.rollback()
    return counts


def test_the_dry_run_reports_what_would_happen_and_writes_nothing(app, session, history):
    before = _row_counts(session)
    statements: list[str] = []

    def watch(_conn, _cursor, statement, *_args):
        statements.append(statement.lstrip().split(None, 1)[0].upper())

    sa.event.listen(db.engine, "before_cursor_execute", watch)
    try:
        report = backfill.preview(session, BackfillScope(), batch_size=4, sample_size=3)
        session.rollback()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", watch)

    assert not {"INSERT", "UPDATE", "DELETE"} & set(statements), "a dry run must not write"
    assert _row_counts(session) == before
    assert report.events_by_type["match_won"] == 3  # alice alone, carol and dave for Red
    assert report.events_by_type["match_forfeit_won"] == 1
    assert report.players_affected == 8  # frank and erin were not on Red at the time
    assert report.stat_changes["all"]["team_tournament_wins"] == 2
    assert "team_tournament_wins" not in report.stat_changes["public"]  # the cup was private
    assert len(report.sample) == 3
    assert report.counts.rejected_forfeit == 1 and report.counts.rejected_no_show == 2
    assert report.counts.skipped_undecided == 1 and report.counts.failed == 0


def test_the_dry_run_numbers_are_what_the_run_then_does(session, history):
    report = backfill.preview(session, BackfillScope(), batch_size=3)
    session.rollback()
    run = run_backfill(session, batch_size=3)
    assert run.result["events_by_type"] == report.events_by_type
    assert run.result["events_inserted"] == report.events_to_create
    totals = {}
    for (_player, scope), values in stored_stats(session).items():
        for stat, value in values.items():
            totals.setdefault(scope, {}).setdefault(stat, 0)
            totals[scope][stat] += value
    assert {s: {k: v for k, v in t.items() if v} for s, t in totals.items()} == report.stat_changes


# Batches, checkpoints, resume and idempotency.


def test_each_batch_is_committed_with_its_ledger_line_and_checkpoint(session, history):
    run = run_backfill(session, batch_size=4)
    lines = ledger(session, run.id)
    rows = backfill.count_source_rows(session, BackfillScope())
    assert [line.batch_no for line in lines] == list(range(1, len(lines) + 1))
    assert len(lines) == -(-rows // 4)
    assert sum(line.counts.rows_read for line in lines) == rows == run.progress_done
    assert sum(line.counts.events_inserted for line in lines) == event_count(
        session, origin_id=run.id
    )
    assert run.checkpoint == lines[-1].position.as_checkpoint()
    assert_every_batch_whole(session, run.id)
    assert_stats_exact(session)


def test_the_run_pauses_between_batches(session, history):
    run_id = start(session, batch_size=4, pause_seconds=0.2)
    started = time.monotonic()
    run = execute_run(session, run_id)
    elapsed = time.monotonic() - started
    session.rollback()
    batches = run.result["batches"]
    assert batches == 3  # 12 source records
    assert elapsed >= batches * 0.2


def test_a_cancelled_run_resumes_from_its_checkpoint_without_duplicates(session, history):
    expected = backfill.preview(session, BackfillScope()).events_to_create
    session.rollback()
    run_id = start(session, batch_size=3)

    def cancel_after_two_batches(done: int, _total) -> None:
        if done == 6:  # inside the second batch's transaction, as staff pressing cancel then
            jobs.request_cancel(session, SYSTEM, run_id)

    first = execute_run(session, run_id, listeners=[cancel_after_two_batches])
    session.rollback()
    assert first.status == "cancelled"
    assert len(ledger(session, run_id)) == 2
    assert 0 < event_count(session) < expected

    again = resume(session, run_id)
    assert again.status == "succeeded", again.error
    assert [line.batch_no for line in ledger(session, run_id)] == list(
        range(1, len(ledger(session, run_id)) + 1)
    )
    assert event_count(session) == expected
    assert again.result["rows_read"] == backfill.count_source_rows(session, BackfillScope())
    assert again.result["parity_ok"], again.result["parity_flags"]
    assert_stats_exact(session)


def test_running_a_finished_backfill_again_creates_nothing(session, history):
    first = run_backfill(session)
    stats = stored_stats(session)
    second = run_backfill(session)
    assert second.status == "succeeded"
    assert second.result["events_inserted"] == 0
    assert second.result["duplicates"] == first.result["events_inserted"]
    assert event_count(session) == first.result["events_inserted"]
    assert stored_stats(session) == stats
    assert second.result["parity_ok"], second.result["parity_flags"]


def test_facts_already_recorded_live_are_duplicates_and_keep_their_origin(session, history):
    with unit_of_work(session):
        live = record_match_result(session, history.won_match.id)
    run = run_backfill(session)
    assert run.result["duplicates"] == len(live.recorded)
    assert {
        e.origin for e in events(session, source_model="match", source_id=history.won_match.id)
    } == {"live"}
    assert run.result["parity_ok"], run.result["parity_flags"]
    assert_stats_exact(session)


def test_the_dry_run_counts_facts_recorded_live_as_duplicates_like_the_run(session, history):
    # Only matches have events stored: the dry run looks their keys up, not the others'.
    with unit_of_work(session):
        live = record_match_result(session, history.won_match.id)
    report = backfill.preview(session, BackfillScope(), batch_size=3)
    session.rollback()
    run = run_backfill(session, batch_size=3)
    assert report.counts.duplicates == run.result["duplicates"] == len(live.recorded)
    assert report.events_to_create == run.result["events_inserted"]
    assert report.events_by_type == run.result["events_by_type"]


def test_a_scope_limits_the_run_to_its_tournaments(session, history):
    run = run_backfill(session, BackfillScope(tournament_from=history.cup.id))
    assert {e.tournament_id for e in events(session)} == {history.cup.id}
    assert run.result["parity_ok"], run.result["parity_flags"]
    before = BackfillScope(before=T0 - timedelta(days=1))
    assert backfill.preview(session, before).counts.rows_read == 0
    session.rollback()


def test_a_backfill_queued_for_the_workers_is_run_by_the_consumer(app, session, history):
    consumer = start_in_process_consumer(app, workers=1)
    try:
        run_id = start(session)
        enqueue_run(app, run_id)
        run = wait_until_finished(session, run_id)
    finally:
        consumer.stop(graceful=True)
    assert run.status == "succeeded", run.error
    assert run.result["events_inserted"] == event_count(session, origin_id=run_id) > 0


# Safeguards.


@pytest.mark.parametrize(
    ("window", "now", "refused"),
    [
        ("06:00-23:59", PEAK, True),
        ("06:00-23:59", OFF_PEAK, False),
        ("06:00-23:59", datetime(2026, 3, 3, 23, 59, 30, tzinfo=UTC), True),
        ("06:00-23:59", datetime(2026, 3, 3, 6, 0, tzinfo=UTC), True),
        ("06:00-23:59", datetime(2026, 3, 3, 5, 59, tzinfo=UTC), False),
        ("22:00-04:00", datetime(2026, 3, 3, 2, 0, tzinfo=UTC), True),
        ("22:00-04:00", PEAK, False),
        ("off", PEAK, False),
    ],
)
def test_the_peak_window_refuses_a_start(session, history, window, now, refused):
    safeguards = Safeguards(now=now, peak_window=window)
    if refused:
        with pytest.raises(BackfillRefused, match="peak window"):
            start(session, safeguards=safeguards)
        assert session.scalar(select(func.count()).select_from(JobRun)) == 0
    else:
        assert start(session, safeguards=safeguards)


def test_forcing_starts_inside_the_peak_window_and_is_recorded(session, history):
    run_id = start(session, safeguards=Safeguards(now=PEAK, force=True))
    run = session.get(JobRun, run_id)
    assert run.params["forced_in_peak_window"] is True
    audit = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "job.backfill.queue")
    ).one()
    assert audit.details["params"]["forced_in_peak_window"] is True


def test_a_request_rate_above_the_limit_refuses_even_a_forced_start(app, client, session, history):
    first = time.time()
    for _ in range(30):
        assert client.get("/").status_code == 302
    last = time.time()
    rate = current_request_rate(app, now=last)
    assert last - first > 4 or rate >= 30 / 5
    busy = Safeguards(now=OFF_PEAK, request_rate=rate, max_request_rate=5, force=True)
    with pytest.raises(BackfillRefused, match="requests/s, above the backfill limit of 5/s"):
        start(session, safeguards=busy)
    quiet_later = current_request_rate(app, now=last + 60)
    assert quiet_later == 0
    assert start(
        session, safeguards=Safeguards(now=OFF_PEAK, request_rate=quiet_later, max_request_rate=5)
    )


def dry_run(session, scope=ALL_HISTORY):
    """Take the dry run in a read transaction of its own, as the dashboard does just before starting."""
    report = backfill.preview(session, scope)
    session.rollback()
    return report


def test_the_typed_number_of_events_must_match_what_would_be_created(session, history):
    report = dry_run(session)
    expected = report.events_to_create
    with pytest.raises(
        Invalid, match=f"says {expected + 1:,} events, but the backfill would create {expected:,}"
    ):
        start(session, dry_run=report, confirmed_events=expected + 1)
    assert session.scalar(select(func.count()).select_from(JobRun)) == 0
    assert start(session, dry_run=report, confirmed_events=expected)


def test_a_number_read_before_history_changed_no_longer_starts_a_backfill(
    session, history, make_match
):
    read_on_the_page = dry_run(session).events_to_create
    make_match(history.solo, history.players["gina"], history.players["hank"], winner="a", round="Q")
    just_before_starting = dry_run(session)
    assert just_before_starting.events_to_create == read_on_the_page + 2
    with pytest.raises(Invalid, match=f"says {read_on_the_page:,} events"):
        start(session, dry_run=just_before_starting, confirmed_events=read_on_the_page)
    assert session.scalar(select(func.count()).select_from(JobRun)) == 0


def test_starting_reads_no_history_inside_its_write_transaction(session, history):
    report = dry_run(session)
    statements: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", note)
    try:
        run_id = start(session, dry_run=report, confirmed_events=report.events_to_create)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", note)
    history_tables = ("matches", "registrations", "tournament_results", "tournaments", "activity_events")
    assert [s for s in statements if any(f" {table}" in s for table in history_tables)] == []
    # BEGIN IMMEDIATE (SQLite), the check for another active run, the run, its audit entry.
    assert len(statements) <= 4, statements
    run = session.get(JobRun, run_id)
    assert run.progress_total == report.counts.rows_read
    assert run.progress_total == backfill.count_source_rows(session, ALL_HISTORY)


def test_a_confirmation_needs_the_dry_run_of_the_same_scope(session, history):
    with pytest.raises(ValueError, match="needs the dry run"):
        start(session, confirmed_events=1)
    with pytest.raises(ValueError, match="covers all history"):
        start(session, BackfillScope(tournament_to=history.solo.id), dry_run=dry_run(session))
    assert session.scalar(select(func.count()).select_from(JobRun)) == 0


def test_only_one_backfill_runs_at_a_time(session, history):
    first = start(session)
    with pytest.raises(Conflict, match=f"backfill run {first} is queued"):
        start(session)


# Failures: refused records, a database that refuses a write, both leave the data consistent.


def test_records_the_services_refuse_are_counted_failed_and_the_run_goes_on_with_a_parity_flag(
    session, history, make_team, make_tournament, make_registration, make_match, make_result
):
    ghost = make_team("Ghosts", [history.players["ivan"]], joined_at=T0 + timedelta(days=10))
    league = make_tournament("League", is_team_based=True)
    make_registration(league, history.red)
    make_registration(league, ghost)
    make_match(league, history.red, ghost, winner="a")
    make_result(league, history.red)
    run = run_backfill(session, batch_size=3)
    assert run.status == "succeeded", run.error
    assert run.result["failed"] == 3  # the Ghosts' registration, their match, the league's result
    errors = [error for line in ledger(session, run.id) for error in line.errors]
    assert len(errors) == 3 and all("had no members" in error for error in errors)
    assert not run.result["parity_ok"]
    assert any(
        flag.startswith("completed matches x 2 sides") for flag in run.result["parity_flags"]
    )
    assert event_count(session, tournament_id=history.cup.id) > 0  # the rest was recorded
    assert_stats_exact(session)


def test_facts_recording_refuses_fail_their_records_and_the_batch_can_be_recorded_again(session, history):
    run_id = start(session)
    prepared = backfill.prepare_batch(session, run_id, ALL_HISTORY, backfill.START, 500)
    session.rollback()
    # Red's memberships go between the batch's reading and its recording: its events are refused.
    session.execute(sa.delete(TeamMembership).where(TeamMembership.team_id == history.red.id))
    session.commit()

    first = backfill.record_batch(session, run_id, 1, prepared)
    session.rollback()  # as after a deadlock: the batch is recorded again from the start
    with unit_of_work(session):
        again = backfill.record_batch(session, run_id, 1, prepared)

    assert again.counts == first.counts and again.errors == first.errors
    assert again.counts.failed > 0 and all("not a member of team" in error for error in again.errors)
    assert again.counts.events_inserted > 0  # the rest of the batch was recorded
    assert not any(row.error for row in prepared.rows)
    assert_stats_exact(session)


@pytest.fixture
def refuse_events_of(session, backend):
    """Make the database refuse events of one tournament, as a full disk or a bad deploy would."""
    created = []

    def refuse(tournament_id: int) -> None:
        if backend == "sqlite":
            session.execute(
                sa.text(
                    "CREATE TRIGGER test_refuse_events BEFORE INSERT ON activity_events "
                    f"WHEN NEW.tournament_id = {tournament_id} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            session.execute(
                sa.text(
                    "CREATE FUNCTION test_refuse_events() RETURNS trigger LANGUAGE plpgsql "
                    f"AS $$ BEGIN IF NEW.tournament_id = {tournament_id} "
                    "THEN RAISE EXCEPTION 'refused by the test'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            session.execute(
                sa.text(
                    "CREATE TRIGGER test_refuse_events BEFORE INSERT ON activity_events "
                    "FOR EACH ROW EXECUTE FUNCTION test_refuse_events()"
                )
            )
        session.commit()
        created.append(tournament_id)

    def remove() -> None:
        if created:
            session.rollback()
            session.execute(
                sa.text(
                    "DROP TRIGGER IF EXISTS test_refuse_events"
                    + (" ON activity_events" if backend == "postgresql" else "")
                )
            )
            if backend == "postgresql":
                session.execute(sa.text("DROP FUNCTION IF EXISTS test_refuse_events()"))
            session.commit()
            created.clear()

    refuse.remove = remove
    yield refuse
    remove()


def test_a_database_refusing_a_write_fails_the_run_and_resume_completes_it(
    session, history, refuse_events_of
):
    expected = backfill.preview(session, BackfillScope()).events_to_create
    session.rollback()
    refuse_events_of(history.cup.id)
    run = run_backfill(session, batch_size=3)
    assert run.status == "failed"
    assert "refused by the test" in run.error
    lines = ledger(session, run.id)
    assert [line.committed for line in lines] == [True] * (len(lines) - 1) + [False]
    assert "refused by the test" in lines[-1].errors[0]
    assert event_count(session, tournament_id=history.cup.id) == 0
    assert event_count(session) == sum(line.counts.events_inserted for line in lines) > 0
    assert_every_batch_whole(session, run.id)
    assert_stats_exact(session)

    refuse_events_of.remove()
    again = resume(session, run.id)
    assert again.status == "succeeded", again.error
    assert event_count(session) == expected
    assert again.result["parity_ok"], again.result["parity_flags"]
    assert_stats_exact(session)


# Rollback.


def test_a_rollback_removes_only_the_runs_events_and_takes_their_stats_back_out(session, history):
    with unit_of_work(session):
        record_match_result(session, history.won_match.id)  # live before the backfill
    live_stats = stored_stats(session)
    run = run_backfill(session)
    assert event_count(session, origin="backfill") > 0

    rollback = roll_back(session, run.id, batch_size=4)
    assert rollback.status == "succeeded", rollback.error
    assert rollback.result["events_deleted"] == run.result["events_inserted"]
    assert event_count(session, origin="backfill") == 0
    assert event_count(session, origin="live") == 2
    assert stored_stats(session) == live_stats
    assert_stats_exact(session)
    audit = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "backfill.rollback")
    ).one()
    assert (audit.target_id, audit.details["events_deleted"]) == (
        run.id,
        run.result["events_inserted"],
    )
    with pytest.raises(Conflict, match="was rolled back"):
        resume(session, run.id)


def _reverse_one_event(session, run_id) -> ActivityEvent:
    won = next(e for e in events(session, origin_id=run_id) if e.event_type == "match_won")
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
                origin_id=1,
                reverses_event_id=won.id,
                metadata={"match_id": won.source_id},
            ),
        )
    return won


def test_a_rollback_is_refused_when_a_dispute_reversed_one_of_the_runs_events(session, history):
    run = run_backfill(session)
    won = _reverse_one_event(session, run.id)
    with pytest.raises(
        Conflict, match=f"event {won.id} \\(match_won of player {won.player_id}\\) was reversed"
    ):
        roll_back(session, run.id)
    assert event_count(session, origin="backfill") == run.result["events_inserted"]
    assert_stats_exact(session)


def test_a_rollback_stops_with_nothing_deleted_when_a_dispute_comes_first(session, history):
    run = run_backfill(session)
    with unit_of_work(session):
        rollback_id = backfill.start_rollback(session, SYSTEM, run.id).id
    _reverse_one_event(session, run.id)  # resolved while the rollback waited in the queue
    rollback = execute_run(session, rollback_id)
    assert rollback.status == "failed"
    assert "corrected after a dispute" in rollback.error
    assert event_count(session, origin="backfill") == run.result["events_inserted"]
    assert_stats_exact(session)


def test_a_running_backfill_cannot_be_rolled_back(session, history):
    run_id = start(session)
    with pytest.raises(Conflict, match="cancel it and wait"):
        backfill.plan_rollback(session, run_id)


def test_backfilling_again_after_archival_creates_nothing(session, history, tmp_path):
    first = run_backfill(session)
    stats = stored_stats(session)
    with unit_of_work(session):
        run_id = archive.start_archive(
            session, SYSTEM, now=utcnow(), after_days=1, url=str(tmp_path / "cold")
        ).id
    archived = execute_run(session, run_id)
    session.rollback()
    assert archived.status == "succeeded", archived.error
    hot_after_archival = event_count(session)
    assert hot_after_archival < first.result["events_inserted"]

    report = backfill.preview(session, ALL_HISTORY)
    session.rollback()
    second = run_backfill(session)

    assert report.events_to_create == 0
    assert second.status == "succeeded"
    assert second.result["events_inserted"] == 0
    assert event_count(session) == hot_after_archival
    assert stored_stats(session) == stats
    assert find_drift(session).drifts == []


def test_a_rollback_is_refused_while_some_of_the_runs_events_are_archived_until_they_are_restored(
    session, history, tmp_path
):
    before = stored_stats(session)
    run = run_backfill(session)
    cold = str(tmp_path / "cold")
    with unit_of_work(session):
        archive_id = archive.start_archive(session, SYSTEM, now=utcnow(), after_days=1, url=cold).id
    assert execute_run(session, archive_id).status == "succeeded"
    session.rollback()
    hot = event_count(session, origin="backfill")
    assert hot < run.result["events_inserted"]
    stats = stored_stats(session)

    with pytest.raises(Conflict, match=r"\d+ of its events are in cold storage \(archive file \d+"):
        roll_back(session, run.id)
    assert event_count(session, origin="backfill") == hot
    assert stored_stats(session) == stats
    assert backfill.rollbacks_of(session, run.id) == []
    session.rollback()

    with unit_of_work(session):
        for archived in archive.list_files(session):
            archive.restore_archive(session, archive.ArchiveStorage(cold), archived.id)
    rollback = roll_back(session, run.id)
    assert rollback.status == "succeeded", rollback.error
    assert rollback.result["events_deleted"] == run.result["events_inserted"]
    assert event_count(session, origin="backfill") == 0
    assert stored_stats(session) == before
    assert_stats_exact(session)


def assert_rolled_back_whole(session, rollback_id: int) -> None:
    """The rollback runs to its end: no backfill event is left and the stats are exact."""
    assert execute_run(session, rollback_id).status == "succeeded"
    session.rollback()
    assert event_count(session, origin="backfill") == 0
    assert_stats_exact(session)


def test_archival_and_a_rollback_refuse_to_run_beside_each_other(session, history, tmp_path):
    run = run_backfill(session)
    cold = str(tmp_path / "cold")
    with unit_of_work(session):
        archive_id = archive.start_archive(session, SYSTEM, now=utcnow(), after_days=1, url=cold).id

    with pytest.raises(Conflict, match=f"archive run {archive_id} is queued; a rollback waits"):
        roll_back(session, run.id)
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, archive_id)
        rollback_id = backfill.start_rollback(session, SYSTEM, run.id).id
    with pytest.raises(Conflict, match=f"backfill rollback run {rollback_id} is queued"):
        with unit_of_work(session):
            archive.start_archive(session, SYSTEM, now=utcnow(), after_days=1, url=cold)
    assert_rolled_back_whole(session, rollback_id)


def test_an_archive_run_queued_beside_a_rollback_at_the_same_moment_refuses_when_it_begins(
    session, history, tmp_path
):
    run = run_backfill(session)
    with unit_of_work(session):
        rollback_id = backfill.start_rollback(session, SYSTEM, run.id).id
        # What a start at the very same moment could store: its own check saw no rollback yet.
        archive_id = jobs.queue_run(session, SYSTEM, "archive", {
            "now": utcnow().isoformat(), "after_days": 1, "url": str(tmp_path / "cold"),
            "hold_player_ids": [],
        }).id

    archived = execute_run(session, archive_id)

    assert archived.status == "failed"
    assert f"backfill rollback run {rollback_id} is queued" in archived.error
    assert_rolled_back_whole(session, rollback_id)


def test_a_run_failed_as_stale_while_its_worker_still_runs_stops_writing_and_resumes_whole(
    app, session, history
):
    run_id = start(session, batch_size=4, pause_seconds=1.0)
    sweeps: list[threading.Thread] = []

    def sweep_after_the_first_batch(done: int, total: int | None) -> None:
        # Called inside the first batch's unit of work. The sweep waits for that
        # batch's commit, then, while the worker pauses, finds the run silent (a
        # limit of 0); the worker holds the run's row only while writing a batch.
        if not sweeps:
            def sweep() -> None:
                with app.app_context():
                    own = db.session()
                    deadline = time.monotonic() + 20
                    while not backfill.ledger(own, run_id):
                        assert time.monotonic() < deadline, "the first batch never committed"
                        own.rollback()
                        time.sleep(0.01)
                    own.rollback()
                    with unit_of_work(own):
                        assert [run.id for run in jobs.fail_stale_runs(own, timedelta(0))] == [run_id]
                    db.session.remove()

            sweeps.append(threading.Thread(target=sweep))
            sweeps[0].start()

    stopped = execute_run(session, run_id, listeners=[sweep_after_the_first_batch])
    sweeps[0].join(30)
    session.rollback()

    assert stopped.status == "failed" and "no heartbeat" in stopped.error, stopped.error
    lines = ledger(session, run_id)
    assert [line.committed for line in lines] == [True], "no batch written after the sweep"
    assert event_count(session, origin_id=run_id) == lines[0].counts.events_inserted
    assert_stats_exact(session)

    resumed = resume(session, run_id)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.result["events_inserted"] == event_count(session, origin="backfill")
    assert parity(session, run_id).ok
    assert_stats_exact(session)
