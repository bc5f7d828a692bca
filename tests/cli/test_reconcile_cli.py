"""``flask reconcile``: what it prints, how it exits, and what each run leaves behind."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import func, select, text

from tests.conftest import T0, make_app
from webapp.domain import operations
from webapp.domain.audit import SYSTEM
from webapp.domain.recording import NewEvent, record_events
from webapp.extensions import db
from webapp.jobs.runner import execute_run
from webapp.models import JobRun, PlayerStats, ReconciliationDrift, ReconciliationRun
from webapp.transaction import unit_of_work

_source_ids = itertools.count(1)


def won(player_id: int) -> NewEvent:
    return NewEvent(
        player_id=player_id,
        event_type="match_won",
        occurred_at=T0,
        source_model="match",
        source_id=next(_source_ids),
        metadata={"round": "R1", "side": "a", "opponent_player_ids": [999]},
    )


def players_with_a_win(session, make_player, n: int) -> list[int]:
    ids = [make_player().id for _ in range(n)]
    with unit_of_work(session):
        record_events(session, [won(p) for p in ids])
    return ids


def zero_wins(session, player_ids) -> None:
    """Corrupt the stored wins of some players behind the projection's back."""
    session.execute(
        text("UPDATE player_stats SET matches_won = 0 WHERE player_id IN :ids").bindparams(
            sa.bindparam("ids", expanding=True)
        ),
        {"ids": list(player_ids)},
    )
    session.commit()


def wins(session, player_id: int) -> int:
    session.expire_all()
    value = session.scalar(
        select(PlayerStats.matches_won).where(
            PlayerStats.player_id == player_id, PlayerStats.scope == "all"
        )
    )
    session.rollback()
    return value


def runs(session) -> list[ReconciliationRun]:
    session.expire_all()
    found = session.scalars(select(ReconciliationRun).order_by(ReconciliationRun.id)).all()
    session.rollback()
    return found


@contextmanager
def counting_commits(engine) -> Iterator[dict[str, int]]:
    counter = {"n": 0}

    def on_commit(_conn) -> None:
        counter["n"] += 1

    sa.event.listen(engine, "commit", on_commit)
    try:
        yield counter
    finally:
        sa.event.remove(engine, "commit", on_commit)


def test_a_clean_database_reports_no_drift(runner, session, make_player):
    players_with_a_win(session, make_player, 3)

    result = runner.invoke(args=["reconcile"])

    assert result.exit_code == 0, result.output
    (run,) = runs(session)
    assert f"run {run.id}: 3 players checked, 0 drifted (0.00%), 0 fixed" in result.output
    assert "expected" not in result.output


def test_drift_is_listed_per_player_and_stat_and_left_alone(runner, session, make_player):
    _alice, bob, _carol, _dave = players_with_a_win(session, make_player, 4)
    zero_wins(session, [bob])

    result = runner.invoke(args=["reconcile"])

    assert result.exit_code == 0, result.output
    assert "4 players checked, 1 drifted (25.00%), 0 fixed" in result.output
    lines = [line.split() for line in result.output.splitlines() if "expected" in line]
    assert lines == [
        ["player", str(bob), "all", "matches_won", "expected", "1", "stored", "0"],
        ["player", str(bob), "public", "matches_won", "expected", "1", "stored", "0"],
    ]
    assert wins(session, bob) == 0, "reporting repairs nothing"
    (run,) = runs(session)
    assert (run.status, run.fix, run.players_drifted, run.players_fixed) == (
        "succeeded", False, 1, 0
    )


def test_a_long_drift_list_is_cut_short(runner, session, make_player):
    ids = players_with_a_win(session, make_player, 15)
    zero_wins(session, ids)

    result = runner.invoke(args=["reconcile"])

    assert result.exit_code == 0, result.output
    assert sum("expected" in line for line in result.output.splitlines()) == 20
    assert "... and 10 more stats" in result.output


def reconcile_counting_commits(runner, *args: str):
    """Run ``flask reconcile`` with ``args``; return its result and how many commits it made."""
    with counting_commits(db.engine) as commits:
        result = runner.invoke(args=["reconcile", *args])
    return result, commits["n"]


def test_fix_repairs_in_one_transaction_per_batch_of_players(app, runner, session, make_player):
    ids = players_with_a_win(session, make_player, 4)
    zero_wins(session, ids[:3])

    _, check_only = reconcile_counting_commits(runner)
    result, fixing = reconcile_counting_commits(runner, "--fix", "--batch-size", "1")

    assert result.exit_code == 0, result.output
    assert "4 players checked, 3 drifted (75.00%), 3 fixed" in result.output
    # Beyond what a check commits (the job run, the run, what it found): one
    # repair per drifted player, both scopes together.
    assert fixing - check_only == 3
    assert [wins(session, p) for p in ids] == [1, 1, 1, 1]
    again = runner.invoke(args=["reconcile"])
    assert "0 drifted" in again.output
    _check, fixed, after = runs(session)
    assert (fixed.fix, fixed.players_fixed, after.players_drifted) == (True, 3, 0)


def test_a_fix_reports_its_progress_batch_by_batch_as_the_progress_bar_shows_it(session, make_player):
    ids = players_with_a_win(session, make_player, 4)
    zero_wins(session, ids[:3])
    with unit_of_work(session):
        job_id = operations.queue_reconciliation(session, SYSTEM, fix=True, batch_size=1).id
    seen: list[tuple[int, int | None]] = []

    job = execute_run(session, job_id, listeners=[lambda done, total: seen.append((done, total))])

    assert job.status == "succeeded", job.error
    repairs = [step for step in seen if step[1] == 3]
    assert repairs == [(1, 3), (2, 3), (3, 3)], seen


def test_a_larger_batch_needs_fewer_transactions(app, runner, session, make_player):
    ids = players_with_a_win(session, make_player, 4)
    zero_wins(session, ids)

    _, check_only = reconcile_counting_commits(runner)
    result, fixing = reconcile_counting_commits(runner, "--fix", "--batch-size", "3")

    assert result.exit_code == 0, result.output
    assert fixing - check_only == 2
    assert [wins(session, p) for p in ids] == [1, 1, 1, 1]


def test_the_run_is_a_job_run_shown_with_the_dashboards_and_the_nightly_ones(runner, session, make_player):
    players_with_a_win(session, make_player, 2)

    result = runner.invoke(args=["reconcile", "--fix"])

    assert result.exit_code == 0, result.output
    session.expire_all()
    (job,) = session.scalars(select(JobRun)).all()
    (run,) = runs(session)
    assert (job.kind, job.status, job.params["fix"]) == ("reconcile", "succeeded", True)
    assert job.result["reconciliation_run_id"] == run.id
    assert f"(job run {job.id})" in result.output


def test_a_fix_is_refused_while_another_fix_is_queued_and_a_check_is_not(runner, session, make_player):
    alice, _bob = players_with_a_win(session, make_player, 2)
    zero_wins(session, [alice])
    with unit_of_work(session):
        waiting = operations.queue_reconciliation(session, SYSTEM, fix=True, batch_size=500)

    refused = runner.invoke(args=["reconcile", "--fix"])
    checked = runner.invoke(args=["reconcile"])

    assert refused.exit_code == 1
    assert f"reconciliation run {waiting.id} is already queued" in refused.output
    assert wins(session, alice) == 0, "the refused fix repaired nothing"
    assert checked.exit_code == 0, checked.output
    assert "2 players checked, 1 drifted" in checked.output


def test_queue_hands_the_run_to_the_workers_without_running_it(runner, session, make_player):
    players_with_a_win(session, make_player, 1)

    result = runner.invoke(args=["reconcile", "--queue"])

    assert result.exit_code == 0, result.output
    session.expire_all()
    (job,) = session.scalars(select(JobRun)).all()
    assert job.status == "queued" and f"job run {job.id} queued" in result.output
    assert runs(session) == []


def test_player_limits_the_check_and_the_repair_to_one_player(runner, session, make_player):
    alice, bob = players_with_a_win(session, make_player, 2)
    zero_wins(session, [alice, bob])

    result = runner.invoke(args=["reconcile", "--fix", "--player", str(bob)])

    assert result.exit_code == 0, result.output
    assert "1 players checked, 1 drifted (100.00%), 1 fixed" in result.output
    assert f"player {alice} " not in result.output
    assert (wins(session, alice), wins(session, bob)) == (0, 1)
    (run,) = runs(session)
    assert run.player_id == bob


def test_an_unknown_player_is_a_clear_error_and_changes_nothing(runner, session, make_player):
    players_with_a_win(session, make_player, 1)

    result = runner.invoke(args=["reconcile", "--fix", "--player", "4040"])

    assert result.exit_code == 2
    assert "error: player 4040 does not exist" in result.output
    assert runs(session) == [], "bad input starts no run"


def test_a_batch_size_below_one_is_refused(runner):
    result = runner.invoke(args=["reconcile", "--fix", "--batch-size", "0"])

    assert result.exit_code == 2
    assert "batch-size" in result.output


# Failures are provoked for real, on a database of the test's own whose schema
# the test breaks, so that the shared database stays whole.


@pytest.fixture
def own_app(backend, fresh_database_url) -> Iterator[Flask]:
    """An app on a freshly migrated database of this test's own."""
    app = make_app(fresh_database_url(backend))
    with app.app_context():
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


def add_players_with_a_win(app: Flask, n: int) -> list[int]:
    session = db.session()
    ids = []
    with unit_of_work(session):
        for i in range(n):
            ids.append(
                session.execute(
                    text(
                        "INSERT INTO players (public_id, username, display_name, email, "
                        "feed_visibility, created_at) VALUES (:pid, :u, :u, :e, 'private', :now) "
                        "RETURNING id"
                    ),
                    {"pid": f"DC-25-{i:06d}", "u": f"p{i}", "e": f"p{i}@example.test", "now": T0},
                ).scalar_one()
            )
    with unit_of_work(session):
        record_events(session, [won(p) for p in ids])
    return ids


def execute(statement: str) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql(statement)


def test_a_run_that_fails_is_stored_as_failed_with_its_error(own_app, backend):
    add_players_with_a_win(own_app, 2)
    execute("ALTER TABLE player_stats RENAME TO player_stats_elsewhere")

    result = own_app.test_cli_runner().invoke(args=["reconcile"])

    assert result.exit_code == 1
    assert "failed" in result.output
    assert "player_stats" in result.output
    session = db.session()
    (run,) = session.scalars(select(ReconciliationRun)).all()
    assert run.status == "failed"
    assert run.finished_at is not None
    assert f"reconciliation run {run.id} failed" in result.output
    assert "player_stats" in run.error
    assert "Traceback" in run.error, "the stored error says where it happened"


def freeze_stats_of(player_id: int, backend: str) -> None:
    """Make the database itself refuse any change to one player's stats."""
    if backend == "sqlite":
        execute(
            "CREATE TRIGGER stats_frozen BEFORE UPDATE ON player_stats "
            f"WHEN NEW.player_id = {player_id} "
            "BEGIN SELECT RAISE(ABORT, 'stats are frozen'); END"
        )
    else:
        execute(
            "CREATE FUNCTION stats_frozen() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'stats are frozen'; END $$"
        )
        execute(
            f"CREATE TRIGGER stats_frozen BEFORE UPDATE ON player_stats FOR EACH ROW "
            f"WHEN (NEW.player_id = {player_id}) EXECUTE FUNCTION stats_frozen()"
        )


def test_a_repair_that_fails_midway_keeps_the_batches_before_it_and_says_so(own_app, backend):
    first, second, third = add_players_with_a_win(own_app, 3)
    session = db.session()
    zero_wins(session, [first, second, third])
    freeze_stats_of(third, backend)

    result = own_app.test_cli_runner().invoke(args=["reconcile", "--fix", "--batch-size", "1"])

    assert result.exit_code == 1
    assert "stats are frozen" in result.output
    assert [wins(session, p) for p in (first, second, third)] == [1, 1, 0]
    (run,) = session.scalars(select(ReconciliationRun)).all()
    assert run.status == "failed"
    assert "stats are frozen" in run.error
    assert (run.players_checked, run.players_drifted, run.players_fixed) == (3, 3, 2)
    drift = session.scalar(
        select(func.count())
        .select_from(ReconciliationDrift)
        .where(ReconciliationDrift.run_id == run.id)
    )
    assert drift == 6, "what the failed run found is kept"
