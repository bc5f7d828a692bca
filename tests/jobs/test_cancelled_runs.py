"""Cancelling a running reconciliation or restore: it stops where its work is whole, cancelled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from tests.conftest import T0
from tests.domain.test_recording import won
from webapp.domain import archive, jobs
from webapp.domain.audit import SYSTEM
from webapp.domain.recording import record_event
from webapp.jobs.runner import JobCancelled, JobContext, execute_run, procedures
from webapp.models import ActivityEvent, ArchiveFile, JobRun, PlayerStats, ReconciliationRun
from webapp.transaction import unit_of_work


def queue(session, kind: str, **params) -> int:
    with unit_of_work(session):
        return jobs.queue_run(session, SYSTEM, kind, params).id


def players_with_wrong_stats(session, make_player, n: int) -> list[int]:
    ids = []
    for k in range(n):
        player = make_player(f"p{k}")
        with unit_of_work(session):
            record_event(session, won(player, match_id=k + 1))
        ids.append(player.id)
    session.execute(text("UPDATE player_stats SET matches_won = 0"))
    session.commit()
    return ids


def wins(session, player_ids) -> list[int]:
    session.rollback()
    return [
        session.scalar(select(PlayerStats.matches_won).where(
            PlayerStats.player_id == player_id, PlayerStats.scope == "all"))
        for player_id in player_ids
    ]


def history_row(session) -> ReconciliationRun:
    session.rollback()
    [row] = session.scalars(select(ReconciliationRun)).all()
    return row


def staff_cancel(session, run_id: int, *, when_done: int):
    """A progress listener that presses cancel inside the unit of work reporting ``when_done``."""

    def listener(done: int, _total) -> None:
        if done == when_done:
            jobs.request_cancel(session, SYSTEM, run_id)

    return listener


# Reconciliation.


def test_a_fix_cancelled_between_batches_ends_cancelled_with_whole_players_repaired(
    session, make_player, webhook
):
    first, second, third = players_with_wrong_stats(session, make_player, 3)
    run_id = queue(session, "reconcile", fix=True, batch_size=1)

    run = execute_run(session, run_id, listeners=[staff_cancel(session, run_id, when_done=1)])

    assert (run.status, run.cancel_requested) == ("cancelled", True)
    assert wins(session, [first, second, third]) == [1, 0, 0]
    history = history_row(session)
    assert (history.players_drifted, history.players_fixed) == (3, 1)
    assert history.status == "cancelled" and history.finished_at is not None
    assert f"cancelled by staff (job run {run_id})" in history.error
    assert webhook.received == [], "staff stopped it: nothing failed"


def test_a_check_cancelled_as_it_starts_stops_before_its_drift_search(session, make_player):
    players_with_wrong_stats(session, make_player, 2)
    run_id = queue(session, "reconcile")

    run = execute_run(session, run_id, listeners=[staff_cancel(session, run_id, when_done=0)])

    assert run.status == "cancelled"
    history = history_row(session)
    assert history.status == "cancelled" and "cancelled by staff" in history.error
    assert history.players_checked == 0, "it never looked"


def test_a_reconciliation_nobody_cancels_still_runs_to_its_end(session, make_player):
    ids = players_with_wrong_stats(session, make_player, 3)
    run_id = queue(session, "reconcile", fix=True, batch_size=1)

    run = execute_run(session, run_id)

    assert run.status == "succeeded" and run.result["players_fixed"] == 3
    assert wins(session, ids) == [1, 1, 1]
    assert history_row(session).status == "succeeded"


# Restore.


def test_a_restore_cancelled_before_it_begins_writing_stops_and_restores_nothing(
    session, make_player, tmp_path
):
    url = str(tmp_path / "cold")
    player = make_player("alice")
    with unit_of_work(session):
        record_event(session, won(player))
    with unit_of_work(session):
        archive_run = archive.start_archive(
            session, SYSTEM, now=T0 + timedelta(days=400), after_days=365, url=url
        ).id
    assert execute_run(session, archive_run).status == "succeeded"
    session.rollback()
    [archived] = archive.list_files(session)
    with unit_of_work(session):
        restore = archive.start_restore(session, SYSTEM, archived.id, url=url)
        run_id, params = restore.id, dict(restore.params)
    with unit_of_work(session):
        jobs.start_run(session, run_id, "worker:1")  # a worker took it up,
    with unit_of_work(session):
        jobs.request_cancel(session, SYSTEM, run_id)  # and staff cancelled before it wrote

    with pytest.raises(JobCancelled):
        procedures()["archive_restore"](session, JobContext(session, run_id, params, None))

    session.rollback()
    assert session.get(ArchiveFile, archived.id).restored_at is None
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 0


# What staff are told.


def running(session, kind: str, **params) -> int:
    run_id = queue(session, kind, **params)
    with unit_of_work(session):
        jobs.start_run(session, run_id, "worker:1")
    return run_id


def test_the_cli_says_where_a_reconciliation_stops_and_that_a_restore_cannot_stop_part_way(
    runner, session
):
    reconcile = running(session, "reconcile", fix=True)
    restore = running(session, "archive_restore", file_id=1, url="unused")

    said = runner.invoke(args=["jobs", "cancel", str(reconcile)])
    assert said.exit_code == 0, said.output
    assert "will stop before its next repair batch" in said.output

    said = runner.invoke(args=["jobs", "cancel", str(restore)])
    assert said.exit_code == 0, said.output
    assert "cannot stop part way" in said.output and "next batch" not in said.output
    session.rollback()
    assert session.get(JobRun, restore).cancel_requested
