"""Reconciliation: drift between stored stats and what the events add up to, and its repair."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tests.conftest import T0
from webapp.domain.errors import NotFound
from webapp.domain.reconciliation import StatDrift, drift_sql, find_drift, repair_drift
from webapp.domain.recording import NewEvent, record_events
from webapp.extensions import db
from webapp.jobs.reconcile import run_reconciliation
from webapp.models import ActivityEvent, PlayerStats, ReconciliationDrift, ReconciliationRun
from webapp.models.stats import STAT_NAMES
from webapp.transaction import unit_of_work

_source_ids = itertools.count(1)


def match_won(player, **overrides) -> NewEvent:
    fields = {
        "player_id": player if isinstance(player, int) else player.id,
        "event_type": "match_won",
        "occurred_at": T0,
        "source_model": "match",
        "source_id": next(_source_ids),
        "metadata": {"round": "R1", "side": "a", "opponent_player_ids": [999]},
    }
    fields.update(overrides)
    return NewEvent(**fields)


def match_lost(player, **overrides) -> NewEvent:
    return match_won(player, event_type="match_lost", **overrides)


def checked_in(player, tournament) -> NewEvent:
    return NewEvent(
        player_id=player.id,
        event_type="tournament_checked_in",
        occurred_at=T0,
        source_model="registration",
        source_id=next(_source_ids),
        tournament_id=tournament.id,
    )


def record(session, *facts: NewEvent) -> None:
    with unit_of_work(session):
        record_events(session, list(facts))


def tamper(session, sql: str, **params) -> None:
    """Change stored stats behind the projection's back, as a bad script would."""
    session.execute(text(sql), params)
    session.commit()


def insert_stats(session, player, scope: str, **values: int) -> None:
    """Store a stats row no event accounts for."""
    row = {name: values.get(name, 0) for name in STAT_NAMES}
    columns = ", ".join(row)
    tamper(
        session,
        f"INSERT INTO player_stats (player_id, scope, {columns}, updated_at) "
        f"VALUES (:player_id, :scope, {', '.join(':' + c for c in row)}, :now)",
        player_id=player.id, scope=scope, now=T0, **row,
    )


def stored(session, player, scope="all") -> dict[str, int]:
    session.expire_all()
    row = session.get(PlayerStats, (player.id, scope))
    return row.as_dict() if row else {}


def drift_rows(session, run) -> int:
    return session.scalar(
        select(func.count())
        .select_from(ReconciliationDrift)
        .where(ReconciliationDrift.run_id == run.id)
    )


def report_of(session, player_id=None):
    report = find_drift(session, player_id)
    session.rollback()
    return report


def test_consistent_stats_show_no_drift(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(session, match_won(alice), match_lost(bob), match_won(bob))

    report = report_of(session)

    assert report.players_checked == 2
    assert report.drifts == []
    assert report.drifted_share == 0.0


def test_drift_is_reported_per_player_and_stat_with_expected_and_stored(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(session, match_won(alice), match_won(alice), match_lost(bob))
    tamper(
        session,
        "UPDATE player_stats SET matches_won = 7 WHERE player_id = :p AND scope = 'all'",
        p=alice.id,
    )
    tamper(
        session,
        "UPDATE player_stats SET matches_lost = 0, matches_played = 3 WHERE player_id = :p",
        p=bob.id,
    )

    report = report_of(session)

    assert report.drifts == [
        StatDrift(alice.id, "all", "matches_won", expected=2, actual=7),
        StatDrift(bob.id, "all", "matches_played", expected=1, actual=3),
        StatDrift(bob.id, "all", "matches_lost", expected=1, actual=0),
        StatDrift(bob.id, "public", "matches_played", expected=1, actual=3),
        StatDrift(bob.id, "public", "matches_lost", expected=1, actual=0),
    ]
    assert report.drifted_players == [alice.id, bob.id]


def test_the_share_of_drifted_players_counts_players_not_stats(session, make_player):
    players = [make_player() for _ in range(4)]
    record(session, *(match_won(p) for p in players))
    tamper(
        session,
        "UPDATE player_stats SET matches_won = 5, matches_played = 5 WHERE player_id = :p",
        p=players[0].id,
    )

    report = report_of(session)

    assert len(report.drifts) == 4, "two stats in two scopes"
    assert report.drifted_players == [players[0].id]
    assert report.drifted_share == pytest.approx(0.25)


def test_stats_without_any_event_are_drift(session, make_player):
    alice = make_player("alice")
    insert_stats(session, alice, "all", matches_played=4, matches_won=4)

    report = report_of(session)

    assert report.drifts == [
        StatDrift(alice.id, "all", "matches_played", expected=0, actual=4),
        StatDrift(alice.id, "all", "matches_won", expected=0, actual=4),
    ]
    assert report.drifted_share == 1.0


def test_events_without_stats_are_drift(session, make_player):
    alice = make_player("alice")
    record(session, match_won(alice))
    tamper(
        session, "DELETE FROM player_stats WHERE player_id = :p AND scope = 'public'", p=alice.id
    )

    report = report_of(session)

    assert report.drifts == [
        StatDrift(alice.id, "public", "matches_played", expected=1, actual=0),
        StatDrift(alice.id, "public", "matches_won", expected=1, actual=0),
    ]


def test_private_tournament_events_are_expected_only_in_the_all_scope(
    session, make_player, make_tournament
):
    alice = make_player("alice")
    secret = make_tournament("Invitational", is_private=True)
    record(session, checked_in(alice, secret))
    assert report_of(session).drifts == []

    insert_stats(session, alice, "public", tournaments_played=1)

    assert report_of(session).drifts == [
        StatDrift(alice.id, "public", "tournaments_played", expected=0, actual=1)
    ]


def test_each_database_counts_its_own_way_and_finds_the_drift_the_portable_counting_finds(
    session, make_player, make_team, make_tournament
):
    # SQLite counts private and team events apart from the rest; the portable
    # counting groups them all at once. Both must find the same drift.
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    pair = make_team("Pair", [alice, bob])
    secret = make_tournament("Invitational", is_private=True)
    record(
        session,
        match_won(alice), match_won(alice, team_id=pair.id), match_won(bob, team_id=pair.id),
        match_lost(bob, tournament_id=secret.id), match_lost(carol, tournament_id=secret.id),
        checked_in(carol, secret), match_won(carol),
    )
    tamper(session, "UPDATE player_stats SET matches_won = matches_won + 2 WHERE player_id = :p", p=alice.id)
    tamper(session, "DELETE FROM player_stats WHERE player_id = :p AND scope = 'all'", p=carol.id)
    tamper(
        session,
        "UPDATE player_stats SET matches_lost = matches_lost + 1 WHERE player_id = :p AND scope = 'public'",
        p=bob.id,
    )

    def rows(sql: str) -> list:
        found = session.execute(text(sql), {"player_id": None}).all()
        session.rollback()
        return found

    found = rows(drift_sql(db.engine.dialect.name))
    assert found == rows(drift_sql(None))
    assert {(row.player_id, row.scope) for row in found} == {
        (alice.id, "all"), (alice.id, "public"), (bob.id, "public"), (carol.id, "all"),
    }
    assert report_of(session).drifted_players == [alice.id, bob.id, carol.id]


def test_one_player_can_be_checked_alone(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(session, match_won(alice), match_won(bob))
    tamper(session, "UPDATE player_stats SET matches_won = 9")

    report = report_of(session, bob.id)

    assert report.players_checked == 1
    assert {d.player_id for d in report.drifts} == {bob.id}
    assert report.drifted_share == 1.0


def test_checking_an_unknown_player_is_not_found(session, make_player):
    make_player("alice")
    with pytest.raises(NotFound, match="player 4040 does not exist"):
        find_drift(session, 4040)
    session.rollback()


def test_repair_brings_drift_to_zero(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(session, match_won(alice), match_lost(alice), match_lost(bob))
    tamper(session, "UPDATE player_stats SET matches_played = matches_played + 10, matches_won = 0")
    tamper(session, "DELETE FROM player_stats WHERE player_id = :p AND scope = 'public'", p=bob.id)

    report = report_of(session)
    with unit_of_work(session):
        repaired = repair_drift(session, report.corrections())

    assert repaired == 4, "two players, both scopes"
    assert report_of(session).drifts == []
    assert stored(session, alice) == stored(session, alice, "public")
    assert stored(session, alice)["matches_played"] == 2
    assert stored(session, alice)["matches_won"] == 1
    assert stored(session, bob, "public")["matches_lost"] == 1


def test_corrections_are_batched_by_whole_players(session, make_player):
    players = [make_player() for _ in range(3)]
    record(session, *(match_won(p) for p in players))
    tamper(session, "UPDATE player_stats SET matches_won = 0")

    batches = report_of(session).correction_batches(2)

    assert [sorted(batch) for batch in batches] == [
        [
            (players[0].id, "all"),
            (players[0].id, "public"),
            (players[1].id, "all"),
            (players[1].id, "public"),
        ],
        [(players[2].id, "all"), (players[2].id, "public")],
    ]
    assert all(deltas == {"matches_won": 1} for batch in batches for deltas in batch.values())


def test_repair_keeps_a_change_committed_after_the_snapshot(app, session, make_player):
    alice = make_player("alice")
    record(session, match_won(alice))
    tamper(session, "UPDATE player_stats SET matches_won = 0 WHERE player_id = :p", p=alice.id)

    report = find_drift(session)
    # Another process records a win while the report is still in hand.
    with Session(db.engine) as other:
        record(other, match_won(alice))
    session.rollback()
    with unit_of_work(session):
        repair_drift(session, report.corrections())

    assert report_of(session).drifts == []
    assert stored(session, alice)["matches_won"] == 2, "the win recorded after the snapshot counts"
    assert stored(session, alice, "public")["matches_won"] == 2


@contextmanager
def recording_in_another_thread(app, player_ids: list[int]) -> Iterator[list[BaseException]]:
    """Keep recording events for ``player_ids`` from a thread with its own session.

    Yields the list the thread's failures land in; stops the thread on exit.
    """
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_recording() -> None:
        try:
            with app.app_context():
                own = db.session()
                for n in itertools.count():
                    if stop.is_set():
                        break
                    # Several players and both scopes change in every transaction.
                    record(
                        own,
                        match_won(player_ids[n % len(player_ids)]),
                        match_lost(player_ids[(n + 1) % len(player_ids)]),
                        match_won(
                            player_ids[(n + 2) % len(player_ids)],
                            event_type="match_forfeit_won",
                            occurred_at=T0 + timedelta(minutes=n),
                        ),
                    )
        except BaseException as exc:  # noqa: BLE001 - the main thread reports it
            failures.append(exc)

    writer = threading.Thread(target=keep_recording)
    writer.start()
    try:
        yield failures
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not writer.is_alive()


def test_events_recorded_during_reconciliation_never_look_like_drift(app, session, make_player):
    players = [make_player() for _ in range(6)]
    record(session, *(match_won(p) for p in players))
    reports, events_seen = [], []

    with recording_in_another_thread(app, [p.id for p in players]) as failures:
        while (len(reports) < 40 or len(set(events_seen)) < 5) and len(reports) < 2000:
            if failures:
                break
            reports.append(find_drift(session))
            # Still inside the snapshot the report was taken in.
            events_seen.append(session.scalar(select(func.count()).select_from(ActivityEvent)))
            session.rollback()

    assert not failures, failures
    assert len(set(events_seen)) >= 5, "events were recorded while reconciliations ran"
    assert [r.drifts for r in reports if r.drifts] == []
    assert all(r.players_checked == 6 for r in reports)


def test_repairs_during_recording_fix_only_the_real_drift_and_lose_no_event(
    app, session, make_player
):
    players = [make_player() for _ in range(4)]
    record(session, *(match_won(p) for p in players))
    broken = players[0].id
    repairs = []

    with recording_in_another_thread(app, [p.id for p in players]) as failures:
        for _ in range(15):
            with unit_of_work(session):
                session.execute(
                    text(
                        "UPDATE player_stats SET matches_lost = matches_lost + 5 "
                        "WHERE player_id = :p"
                    ),
                    {"p": broken},
                )
            repairs.append(run_reconciliation(session, fix=True, batch_size=1))
            if failures:
                break

    assert not failures, failures
    assert len(repairs) == 15
    for outcome in repairs:
        assert {(d.player_id, d.scope, d.stat, d.difference) for d in outcome.report.drifts} == {
            (broken, "all", "matches_lost", -5),
            (broken, "public", "matches_lost", -5),
        }
        assert outcome.players_fixed == 1
    assert report_of(session).drifts == [], "no event recorded meanwhile was overwritten"


def test_a_run_is_stored_with_its_counts_and_drift(session, make_player):
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    record(session, match_won(alice), match_won(bob), match_lost(carol))
    tamper(
        session,
        "UPDATE player_stats SET matches_won = 3 WHERE player_id = :p AND scope = 'all'",
        p=bob.id,
    )

    outcome = run_reconciliation(session)

    run = session.get(ReconciliationRun, outcome.run_id)
    assert run.status == "succeeded"
    assert run.fix is False
    assert run.started_at <= run.finished_at
    assert (run.players_checked, run.players_drifted, run.players_fixed) == (3, 1, 0)
    assert run.error is None
    drift = session.scalars(
        select(ReconciliationDrift).where(ReconciliationDrift.run_id == run.id)
    ).all()
    assert [(d.player_id, d.scope, d.stat, d.expected, d.actual) for d in drift] == [
        (bob.id, "all", "matches_won", 1, 3)
    ]
    assert stored(session, bob)["matches_won"] == 3, "a run without fix changes no stat"


def test_a_fixing_run_repairs_and_stores_what_it_fixed(session, make_player):
    players = [make_player() for _ in range(5)]
    record(session, *(match_won(p) for p in players))
    tamper(
        session, "UPDATE player_stats SET matches_won = 0 WHERE player_id <> :p", p=players[0].id
    )

    outcome = run_reconciliation(session, fix=True, batch_size=2)

    run = session.get(ReconciliationRun, outcome.run_id)
    assert (run.status, run.fix, run.players_drifted, run.players_fixed) == (
        "succeeded", True, 4, 4
    )
    assert drift_rows(session, run) == 8
    assert report_of(session).drifts == []
    again = run_reconciliation(session, fix=True)
    assert (again.report.drifts, again.players_fixed) == ([], 0)


def test_a_run_for_one_player_stores_the_player(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    record(session, match_won(alice), match_won(bob))
    tamper(session, "UPDATE player_stats SET matches_won = 4")

    outcome = run_reconciliation(session, fix=True, player_id=alice.id)

    run = session.get(ReconciliationRun, outcome.run_id)
    assert (run.player_id, run.players_checked, run.players_fixed) == (alice.id, 1, 1)
    assert stored(session, alice)["matches_won"] == 1
    assert stored(session, bob)["matches_won"] == 4, "other players are left alone"


def _statements_to_find_drift(session, count_queries) -> int:
    with count_queries() as counter:
        find_drift(session)
    session.rollback()
    return counter["n"]


def test_finding_drift_is_one_set_based_query_whatever_the_number_of_players(
    session, make_player, count_queries
):
    few = [make_player() for _ in range(2)]
    record(session, *(match_won(p) for p in few))
    tamper(session, "UPDATE player_stats SET matches_won = 5")
    with_few = _statements_to_find_drift(session, count_queries)

    many = [make_player() for _ in range(40)]
    record(session, *(match_won(p) for p in many), *(match_lost(p) for p in many))
    tamper(session, "UPDATE player_stats SET matches_won = 5")
    with_many = _statements_to_find_drift(session, count_queries)

    assert len(report_of(session).drifted_players) == 42
    assert with_many == with_few
    assert with_few <= 3, "begin, count players, one drift query"


def test_a_run_for_an_unknown_player_is_refused_before_it_starts(session, make_player):
    make_player("alice")

    with pytest.raises(NotFound, match="player 4040 does not exist"):
        run_reconciliation(session, fix=True, player_id=4040)

    session.rollback()
    assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 0


def test_a_fixing_run_needs_no_more_statements_for_more_drifted_players(
    session, make_player, count_queries
):
    def statements_to_fix() -> int:
        tamper(session, "UPDATE player_stats SET matches_won = matches_won + 3")
        with count_queries() as counter:
            outcome = run_reconciliation(session, fix=True, batch_size=1000)
        assert outcome.report.drifts and report_of(session).drifts == []
        return counter["n"]

    record(session, *(match_won(make_player()) for _ in range(2)))
    with_few = statements_to_fix()
    record(session, *(match_won(make_player()) for _ in range(40)))
    with_many = statements_to_fix()

    assert with_many == with_few
