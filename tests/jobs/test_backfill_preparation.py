"""A long backfill's batches prepared by a process of its own: the same events, stats and ledger."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from tests.jobs.test_backfill import (
    ALL_HISTORY,
    assert_stats_exact,
    ledger,
    run_backfill,
    start,
    stored_stats,
)
from webapp.domain import backfill
from webapp.domain.demo import generate_demo_data
from webapp.jobs import preparation
from webapp.jobs.preparation import PreparationProcess
from webapp.models import ActivityEvent
from webapp.transaction import unit_of_work

FACT_COLUMNS = (
    "player_id", "event_type", "source_model", "source_id", "occurred_at", "team_id", "tournament_id",
    "is_private", "details",
)


@pytest.fixture
def prepared_apart(app, monkeypatch):
    """Every backfill has its batches prepared by a forked process, ready before the first batch."""
    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_PROCESS_FROM", 0)
    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_START", "fork")


def facts(session) -> set[tuple]:
    found = {tuple(repr(getattr(e, c)) for c in FACT_COLUMNS) for e in session.scalars(select(ActivityEvent))}
    session.rollback()
    return found


def wipe_events(session) -> None:
    with unit_of_work(session):
        for table in ("data_quality_findings", "activity_events", "player_stats"):
            session.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture
def live_history(session) -> tuple[set[tuple], dict]:
    """Demo history recorded by the live services, then its events wiped: what a backfill must give back."""
    with unit_of_work(session):
        generate_demo_data(session, scale=0.01, seed=17)
    recorded = facts(session), stored_stats(session)
    wipe_events(session)
    return recorded


def test_a_backfill_prepared_in_a_process_gives_exactly_the_events_and_stats_live_traffic_gave(
    session, live_history, prepared_apart
):
    live_facts, live_stats = live_history
    run = run_backfill(session, batch_size=97)

    assert run.status == "succeeded", run.error
    assert run.result["batches_prepared_apart"] == run.result["batches"] > 1
    assert facts(session) == live_facts
    assert stored_stats(session) == live_stats
    assert run.result["events_inserted"] == len(live_facts)
    assert run.result["parity_ok"], run.result["parity_flags"]
    assert_stats_exact(session)


def test_the_rules_hold_whichever_process_prepares_the_batches(app, session, history, monkeypatch):
    """Forfeits, no-shows, team members at the time, private tournaments: the same ledger and events."""
    in_worker = run_backfill(session, batch_size=3)
    expected = facts(session), stored_stats(session), [line.counts for line in ledger(session, in_worker.id)]
    assert in_worker.result["batches_prepared_apart"] == 0
    wipe_events(session)

    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_PROCESS_FROM", 0)
    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_START", "fork")
    apart = run_backfill(session, batch_size=3)

    assert apart.status == "succeeded", apart.error
    assert apart.result["batches_prepared_apart"] == apart.result["batches"]
    assert (facts(session), stored_stats(session), [line.counts for line in ledger(session, apart.id)]) == expected
    assert apart.result["rejected_forfeit"] == 1 and apart.result["rejected_no_show"] == 2
    assert_stats_exact(session)


def test_running_a_finished_backfill_again_in_a_process_creates_nothing(session, history, prepared_apart):
    first = run_backfill(session, batch_size=3)
    before = facts(session), stored_stats(session)

    again = run_backfill(session, batch_size=3)

    assert again.status == "succeeded", again.error
    assert again.result["events_inserted"] == 0
    assert again.result["duplicates"] == first.result["events_inserted"] > 0
    # Each packed batch repeated stored events, so each was recorded the general way.
    assert first.result["batches_prepared_apart"] == first.result["batches"]
    assert again.result["batches_prepared_apart"] == 0
    assert (facts(session), stored_stats(session)) == before
    assert_stats_exact(session)


def test_when_the_preparation_process_dies_the_worker_prepares_the_rest_and_the_run_is_exact(
    session, live_history, prepared_apart, caplog
):
    live_facts, live_stats = live_history
    killed = []

    def kill_the_preparation_process(done, _total):
        if not killed:
            [child] = multiprocessing.active_children()
            os.kill(child.pid, signal.SIGKILL)
            killed.append(child.pid)

    with caplog.at_level(logging.WARNING, logger="webapp.jobs.backfill"):
        run = run_backfill(session, batch_size=97, listeners=[kill_the_preparation_process])

    assert run.status == "succeeded", run.error
    assert killed
    assert 0 < run.result["batches_prepared_apart"] < run.result["batches"]
    assert "preparing the remaining batches in the worker" in caplog.text
    assert facts(session) == live_facts
    assert stored_stats(session) == live_stats
    assert run.result["parity_ok"], run.result["parity_flags"]
    assert_stats_exact(session)


def _without_times(packed: backfill.PackedBatch) -> tuple:
    """A packed batch less when it was prepared and the recording time its values carry until recorded."""
    values = [v[:3] + v[4:] for v in packed.converted.values]
    return (packed.start, packed.after, packed.match_ids, packed.result_ids, packed.counts, packed.failures,
            packed.converted.dialect, values)


@pytest.mark.parametrize("start_method", ["fork", "interpreter"])
def test_the_preparation_process_packs_each_batch_as_the_worker_would(app, session, history, start_method):
    run_id = start(session)
    engine = session.get_bind()
    in_worker = []
    position = backfill.START
    while (prepared := backfill.prepare_batch(session, run_id, ALL_HISTORY, position, 3)) is not None:
        in_worker.append(backfill.pack_batch(prepared, position, engine.dialect))
        position = prepared.after
    session.rollback()

    process = PreparationProcess(
        engine, app.config["SQLALCHEMY_ENGINE_OPTIONS"], run_id, ALL_HISTORY, 3, start=start_method
    )
    try:
        assert process.forked == (start_method == "fork")
        assert process.wait_until_ready(60)
        apart = []
        position = backfill.START
        while (packed := process.receive(process.ask(position))) is not None:
            apart.append(packed)
            position = packed.after
    finally:
        process.close()

    assert [_without_times(p) for p in apart] == [_without_times(p) for p in in_worker]
    assert len(apart) > 2
    assert not process.ready  # closed: the process has ended


def test_an_unknown_way_to_start_the_preparation_process_is_refused(app, session):
    with pytest.raises(ValueError, match="unknown way to start"):
        PreparationProcess(session.get_bind(), {}, 1, ALL_HISTORY, 3, start="thread")


def test_a_short_backfill_is_prepared_in_the_worker(app, session, history, monkeypatch, caplog):
    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_PROCESS_FROM", 10_000)
    monkeypatch.setitem(app.config, "BACKFILL_PREPARATION_START", "fork")
    with caplog.at_level(logging.INFO, logger="webapp.jobs.preparation"):
        run = run_backfill(session, batch_size=3)
    assert run.status == "succeeded", run.error
    assert run.result["batches_prepared_apart"] == 0
    assert "batches prepared by process" not in caplog.text  # none was started


def test_closing_a_preparation_process_with_a_batch_unread_lets_it_end_by_itself(app, session):
    """A cancelled or failed run closes the process while it may be sending a batch nobody reads."""
    with unit_of_work(session):
        generate_demo_data(session, scale=0.08, seed=19)
    wipe_events(session)
    run_id = start(session)
    batch = backfill.prepare_batch(session, run_id, ALL_HISTORY, backfill.START, 5_000)
    packed = backfill.pack_batch(batch, backfill.START, session.get_bind().dialect)
    session.rollback()
    assert len(pickle.dumps(packed)) > 384 * 1024, "larger than a pipe holds, so its sender waits"

    process = PreparationProcess(
        session.get_bind(), app.config["SQLALCHEMY_ENGINE_OPTIONS"], run_id, ALL_HISTORY, 5_000, start="fork"
    )
    assert process.wait_until_ready(30)
    process.ask(backfill.START)  # never received
    time.sleep(1)
    process.close()
    assert process.exit_code == 0  # it ended on its own: not killed after the wait


def test_a_preparation_process_that_stops_answering_is_given_up_and_the_run_is_exact(
    session, live_history, prepared_apart, monkeypatch, caplog
):
    live_facts, live_stats = live_history
    monkeypatch.setattr(preparation, "ANSWER_TIMEOUT_SECONDS", 1.0)
    stopped = []

    def stop_the_preparation_process(done, _total):
        if not stopped:
            [child] = multiprocessing.active_children()
            os.kill(child.pid, signal.SIGSTOP)  # alive, but never answering again
            stopped.append(child)

    with caplog.at_level(logging.WARNING, logger="webapp.jobs.backfill"):
        run = run_backfill(session, batch_size=97, listeners=[stop_the_preparation_process])

    assert run.status == "succeeded", run.error
    assert "sent nothing for 1 s" in caplog.text
    assert 0 < run.result["batches_prepared_apart"] < run.result["batches"]
    assert not stopped[0].is_alive()  # killed when given up
    assert facts(session) == live_facts
    assert stored_stats(session) == live_stats
    assert_stats_exact(session)


def test_a_preparation_process_that_fails_leaves_the_batches_to_the_worker(
    app, session, backend, live_history, prepared_apart, monkeypatch, caplog
):
    live_facts, live_stats = live_history
    # Options the worker's engine never sees: only the preparation process's connection fails.
    unusable = {"timeout": "never"} if backend == "sqlite" else {"options": "-c no_such.setting_here"}
    monkeypatch.setitem(app.config, "SQLALCHEMY_ENGINE_OPTIONS", {
        **app.config["SQLALCHEMY_ENGINE_OPTIONS"], "connect_args": unusable,
    })

    with caplog.at_level(logging.WARNING, logger="webapp.jobs.backfill"):
        run = run_backfill(session, batch_size=97)

    assert run.status == "succeeded", run.error
    assert run.result["batches_prepared_apart"] == 0
    assert "the preparation process failed" in caplog.text
    assert "preparing the remaining batches in the worker" in caplog.text
    assert facts(session) == live_facts
    assert stored_stats(session) == live_stats
    assert_stats_exact(session)
