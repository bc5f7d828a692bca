"""Racing writers: the same facts recorded at once by several processes or threads.

Every fact must end up as exactly one event, every stat must count it exactly
once, and reconciliation must find nothing to repair, on both databases.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, event, func, select, update
from sqlalchemy.orm import Session

from tests.conftest import T0, make_app
from webapp.domain.errors import Conflict
from webapp.domain.projection import ProjectedEvent, expected_stats, stat_deltas
from webapp.domain.reconciliation import find_drift
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.results import (
    TeamRoster,
    match_events,
    record_match_result,
    record_registration,
    record_tournament_result,
    registration_events,
    tournament_result_events,
)
from webapp.extensions import db
from webapp.models import (
    ActivityEvent,
    DataQualityFinding,
    Match,
    Player,
    PlayerStats,
    Registration,
    Team,
    TeamMembership,
    Tournament,
    TournamentResult,
)
from webapp.transaction import (
    ConcurrentChange,
    DatabaseUnavailable,
    run_in_unit_of_work,
    unit_of_work,
)

pytestmark = pytest.mark.slow

WORKERS = 4
MATCHES = 200
# How long a worker may wait for the others at the start line before the test fails.
START_TIMEOUT_S = 120

Fact = tuple[str, int]  # ("match" | "registration" | "tournament", id)

RECORDERS: dict[str, Callable] = {
    "match": record_match_result,
    "registration": record_registration,
    "tournament": record_tournament_result,
}


# The platform the workers race on


def build_platform(session) -> list[Fact]:
    """Create players, teams, tournaments, 200 decided matches, registrations and results."""
    rng = random.Random(2026)
    players = [
        Player(public_id=f"DC-25-{n:06d}", username=f"racer{n}", display_name=f"Racer {n}",
               email=f"racer{n}@example.test")
        for n in range(12)
    ]
    session.add_all(players)
    session.flush()
    p = [player.id for player in players]
    long_ago = T0 - timedelta(days=365)
    teams = {name: Team(name=name) for name in ("Owls", "Larks", "Ravens")}
    session.add_all(teams.values())
    session.flush()
    memberships = [
        *((teams["Owls"].id, pid, long_ago, None) for pid in p[0:3]),
        *((teams["Larks"].id, pid, long_ago, None) for pid in p[3:6]),
        *((teams["Ravens"].id, pid, long_ago, None) for pid in p[6:8]),
        # One Raven left before anything happened and must never hear of it.
        (teams["Ravens"].id, p[11], long_ago, T0 - timedelta(days=3)),
    ]
    session.add_all(
        TeamMembership(team_id=t, player_id=pid, joined_at=joined, left_at=left)
        for t, pid, joined, left in memberships
    )
    tournaments = {
        (private, team_based): Tournament(
            name=f"{'Private' if private else 'Open'} {'Team' if team_based else 'Solo'} Cup",
            is_private=private, is_team_based=team_based, starts_at=T0, ends_at=T0 + timedelta(days=3),
        )
        for private in (False, True)
        for team_based in (False, True)
    }
    session.add_all(tournaments.values())
    session.flush()

    matches = []
    for n in range(MATCHES):
        private, team_based = rng.random() < 0.3, rng.random() < 0.4
        if team_based:
            a, b = rng.sample(list(teams.values()), 2)
            sides = {"side_a_team_id": a.id, "side_b_team_id": b.id}
        else:
            a, b = rng.sample(p[:10], 2)
            sides = {"side_a_player_id": a, "side_b_player_id": b}
        at = T0 + timedelta(minutes=10 * n)
        matches.append(Match(
            tournament_id=tournaments[(private, team_based)].id, round=f"R{n % 5 + 1}",
            state="forfeit" if rng.random() < 0.15 else "completed", winner_side=rng.choice("ab"),
            scheduled_at=at, completed_at=at, **sides,
        ))
    session.add_all(matches)

    registrations = []
    statuses = ("completed", "checked_in", "no_show", "withdrawn", "registered")
    for (_private, team_based), tournament in tournaments.items():
        entrants = [{"team_id": t.id} for t in teams.values()] if team_based else [
            {"player_id": pid} for pid in p[:10]
        ]
        for i, entrant in enumerate(entrants):
            registrations.append(Registration(
                tournament_id=tournament.id, status=statuses[i % len(statuses)],
                registered_at=T0 - timedelta(days=2), **entrant,
            ))
        winner = {"winner_team_id": teams["Owls"].id} if team_based else {"winner_player_id": p[0]}
        session.add(TournamentResult(tournament_id=tournament.id, decided_at=T0 + timedelta(days=3), **winner))
    session.add_all(registrations)
    session.commit()
    return (
        [("match", m.id) for m in matches]
        + [("registration", r.id) for r in registrations]
        + [("tournament", t.id) for t in tournaments.values()]
    )


def facts_of(session, facts: Sequence[Fact]) -> list[NewEvent]:
    """Derive, without recording anything, the events the platform's records give."""
    roster = TeamRoster.load(session, session.scalars(select(Team.id)))
    events: list[NewEvent] = []
    for kind, source_id in facts:
        if kind == "match":
            events += match_events(session.get(Match, source_id), roster)
        elif kind == "registration":
            registration = session.get(Registration, source_id)
            events += registration_events(registration, session.get(Tournament, registration.tournament_id), roster)
        else:
            tournament = session.get(Tournament, source_id)
            result = session.scalars(select(TournamentResult).filter_by(tournament_id=source_id)).one()
            registrations = session.scalars(select(Registration).filter_by(tournament_id=source_id)).all()
            events += tournament_result_events(result, tournament, registrations, roster)
    return events


# What the workers do


def record_one_by_one(session, facts: Sequence[Fact], seed: int) -> int:
    """Record every fact in its own unit of work, in an order of the worker's own; return events recorded."""
    order = list(facts)
    random.Random(seed).shuffle(order)
    recorded = 0
    for kind, source_id in order:
        with unit_of_work(session):
            recorded += len(RECORDERS[kind](session, source_id).recorded)
    return recorded


def record_in_batches(session, facts: Sequence[Fact], seed: int) -> int:
    """Record the facts in shuffled batches of 25, each batch one unit of work, as a backfill does."""
    order = list(facts)
    random.Random(seed).shuffle(order)
    recorded = 0
    for start in range(0, len(order), 25):
        batch = order[start : start + 25]
        with unit_of_work(session):
            recorded += len(record_events(session, facts_of(session, batch)).recorded)
    return recorded


def record_several_per_unit(session, facts: Sequence[Fact], seed: int) -> int:
    """Record four results per unit of work, one call each, retrying units that collide."""
    order = list(facts)
    random.Random(seed).shuffle(order)
    recorded = 0
    for start in range(0, len(order), 4):
        group = order[start : start + 4]

        def record_group(session, group=group):
            return sum(len(RECORDERS[kind](session, source_id).recorded) for kind, source_id in group)

        recorded += run_in_unit_of_work(session, record_group, attempts=20)
    return recorded


STRATEGIES = {
    "one_by_one": record_one_by_one,
    "batches": record_in_batches,
    "several_per_unit": record_several_per_unit,
}


def _race_in_process(url: str, strategy: str, facts: list[Fact], seed: int, start, results) -> None:
    """Body of one worker process: its own app, engine and session."""
    try:
        app = make_app(url)
        with app.app_context():
            session = db.session()
            # Connect before the start line so that the race is about writing, not connecting.
            session.execute(select(1))
            session.rollback()
            start.wait(START_TIMEOUT_S)
            results.put(("ok", STRATEGIES[strategy](session, facts, seed)))
            db.session.remove()
            db.engine.dispose()
    except Exception:  # reported to the test, which fails on it
        results.put(("error", traceback.format_exc()))


def _race_in_thread(app, strategy: str, facts: list[Fact], seed: int, start, results) -> None:
    try:
        with app.app_context():
            try:
                session = db.session()
                session.execute(select(1))
                session.rollback()
                start.wait(START_TIMEOUT_S)
                results.put(("ok", STRATEGIES[strategy](session, facts, seed)))
            finally:
                db.session.remove()
    except Exception:  # reported to the test, which fails on it
        results.put(("error", traceback.format_exc()))


def race_processes(url: str, strategy: str, facts: list[Fact]) -> list[int]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WORKERS)
    results = context.Queue()
    workers = [
        context.Process(target=_race_in_process, args=(url, strategy, facts, seed, start, results))
        for seed in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        return _collect(results, lambda: any(w.is_alive() for w in workers))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
                worker.join()


def race_threads(app, strategy: str, facts: list[Fact]) -> list[int]:
    start = threading.Barrier(WORKERS)
    results: queue.Queue = queue.Queue()
    workers = [
        threading.Thread(target=_race_in_thread, args=(app, strategy, facts, seed, start, results))
        for seed in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        return _collect(results, lambda: any(w.is_alive() for w in workers))
    finally:
        for worker in workers:
            worker.join(timeout=60)


def _collect(results, any_alive: Callable[[], bool]) -> list[int]:
    outcomes = []
    while len(outcomes) < WORKERS:
        try:
            outcomes.append(results.get(timeout=5))
        except queue.Empty:
            if not any_alive():
                pytest.fail(f"a worker died without reporting; got {outcomes}")
    errors = [detail for status, detail in outcomes if status == "error"]
    assert not errors, "a worker failed:\n" + "\n".join(errors)
    return [recorded for _status, recorded in outcomes]


# What must hold afterwards


def assert_each_fact_recorded_exactly_once(session, facts: list[Fact], recorded_per_worker: list[int]) -> None:
    session.rollback()
    expected = {event.key: event for event in facts_of(session, facts)}
    stored_keys = session.execute(
        select(ActivityEvent.player_id, ActivityEvent.event_type, ActivityEvent.source_model,
               ActivityEvent.source_id)
    ).all()
    assert len(stored_keys) == len(set(stored_keys)) == len(expected)
    assert set(stored_keys) == set(expected)
    assert sum(recorded_per_worker) == len(expected), "each event was reported recorded by one worker"
    assert session.scalar(select(func.count()).select_from(DataQualityFinding)) == 0

    private = dict(session.execute(select(Tournament.id, Tournament.is_private)).all())
    by_hand = {
        key: values
        for key, values in stat_deltas(
            ProjectedEvent(e.player_id, e.event_type, e.team_id is not None, private[e.tournament_id])
            for e in expected.values()
        ).items()
        if any(values.values())
    }
    stored = {
        (row.player_id, row.scope): row.as_dict()
        for row in session.scalars(select(PlayerStats))
        if any(row.as_dict().values())
    }
    assert stored == by_hand
    assert stored == expected_stats(session)
    report = find_drift(session)
    session.rollback()
    assert report.drifts == []


def test_the_platform_under_race_gives_the_events_the_result_services_describe(session):
    facts = build_platform(session)
    events = facts_of(session, facts)
    ravens_leaver = session.scalars(select(Player.id).filter_by(username="racer11")).one()
    assert not [e for e in events if e.player_id == ravens_leaver]
    assert {e.event_type for e in events} >= {
        "match_won", "match_lost", "match_forfeit_won", "match_forfeit_lost", "tournament_registered",
        "tournament_checked_in", "tournament_completed", "tournament_won",
    }
    assert any(e.team_id is not None and e.event_type == "tournament_won" for e in events)


@pytest.mark.parametrize("strategy", ["one_by_one", "batches"])
def test_concurrent_event_creation_no_duplicates(app, session, strategy):
    facts = build_platform(session)
    recorded = race_processes(app.config["SQLALCHEMY_DATABASE_URI"], strategy, facts)
    assert_each_fact_recorded_exactly_once(session, facts, recorded)


@pytest.mark.parametrize("strategy", ["one_by_one", "batches"])
def test_concurrent_event_creation_no_duplicates_in_threads(app, session, strategy):
    facts = build_platform(session)
    recorded = race_threads(app, strategy, facts)
    assert_each_fact_recorded_exactly_once(session, facts, recorded)


def test_concurrent_units_of_several_results_each_are_retried_when_they_collide(app, session):
    # On PostgreSQL these deadlock now and then (each costs the server's
    # deadlock_timeout), so the race is shorter than the others.
    facts = build_platform(session)[:48]
    recorded = race_threads(app, "several_per_unit", facts)
    assert_each_fact_recorded_exactly_once(session, facts, recorded)


def _record_two_matches_crosswise(engine, matches: tuple[int, int], retry: bool) -> list[tuple]:
    """Two writers each record both matches in one unit of work, in opposite orders.

    They meet after their first match, each holding that match's rows, so on
    PostgreSQL each then waits for the other: a deadlock, every time.
    """
    meet = threading.Barrier(2)
    outcomes: queue.Queue = queue.Queue()

    def writer(order: tuple[int, int]) -> None:
        calls = 0

        def work(session) -> int:
            nonlocal calls
            calls += 1
            recorded = len(record_match_result(session, order[0]).recorded)
            if calls == 1:
                meet.wait(START_TIMEOUT_S)
            return recorded + len(record_match_result(session, order[1]).recorded)

        with Session(engine) as session:
            try:
                if retry:
                    recorded = run_in_unit_of_work(session, work)
                else:
                    with unit_of_work(session):
                        recorded = work(session)
                outcomes.put(("committed", recorded, calls))
            except ConcurrentChange:
                outcomes.put(("collided", 0, calls))
            except Exception:  # reported to the test, which fails on it
                outcomes.put(("error", traceback.format_exc(), calls))

    threads = [threading.Thread(target=writer, args=(order,)) for order in (matches, matches[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(START_TIMEOUT_S)
    results = sorted(outcomes.get_nowait() for _ in threads)
    errors = [detail for status, detail, _calls in results if status == "error"]
    assert not errors, "a writer failed:\n" + "\n".join(errors)
    return results


@pytest.fixture
def two_matches(backend, make_player, make_tournament, make_match):
    if backend == "sqlite":
        pytest.skip("SQLite writers queue at BEGIN IMMEDIATE, so two units of work never hold locks at once")
    alice, bob, carol, dave = (make_player(name) for name in ("alice", "bob", "carol", "dave"))
    cup = make_tournament()
    return make_match(cup, alice, bob).id, make_match(cup, carol, dave).id


def test_a_deadlock_undoes_one_unit_of_work_whole_and_says_it_was_a_concurrent_change(session, two_matches):
    outcomes = _record_two_matches_crosswise(db.engine, two_matches, retry=False)

    assert [status for status, _recorded, _calls in outcomes] == ["collided", "committed"]
    assert issubclass(ConcurrentChange, Conflict)
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 4
    assert sum(recorded for _status, recorded, _calls in outcomes) == 4
    assert find_drift(session).drifts == []


def test_run_in_unit_of_work_runs_the_loser_of_a_deadlock_again_from_the_start(session, two_matches):
    outcomes = _record_two_matches_crosswise(db.engine, two_matches, retry=True)

    assert [status for status, _recorded, _calls in outcomes] == ["committed", "committed"]
    assert sorted(calls for _status, _recorded, calls in outcomes) == [1, 2]
    assert sum(recorded for _status, recorded, _calls in outcomes) == 4, "the retry found both recorded"
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 4
    assert find_drift(session).drifts == []


def test_a_unit_of_work_after_a_drift_check_writes_on_fresh_data_not_on_the_check_snapshot(
    app, session, make_player, make_tournament, make_match
):
    alice, bob = make_player("alice"), make_player("bob")
    match = make_match(make_tournament(), alice, bob, winner="a")
    find_drift(session)  # leaves its snapshot open, as documented
    # Another writer records the match after the snapshot was taken.
    with Session(db.engine) as other, unit_of_work(other):
        record_match_result(other, match.id)

    with unit_of_work(session):
        outcome = record_match_result(session, match.id)

    assert [o.status.value for o in outcome.outcomes] == ["duplicate", "duplicate"]
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 2
    assert session.get(PlayerStats, (alice.id, "all")).matches_won == 1


@pytest.fixture
def impatient_session(app, backend):
    """A session on the app's database that gives up after 100 ms waiting for a lock."""
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])

    @event.listens_for(engine, "connect")
    def wait_briefly(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        if backend == "sqlite":
            cursor.execute("PRAGMA busy_timeout=100")
        else:
            cursor.execute("SET lock_timeout = '100ms'")
        cursor.close()

    with Session(engine) as impatient:
        yield impatient
    engine.dispose()


def test_a_writer_that_cannot_get_the_lock_gets_a_domain_error_and_can_try_again(
    app, session, impatient_session, make_player, make_tournament, make_match
):
    alice, bob = make_player("alice"), make_player("bob")
    match = make_match(make_tournament(), alice, bob, winner="a")
    with unit_of_work(session):
        session.add(PlayerStats(player_id=alice.id, scope="all"))
    # Another writer holds the lock: the whole database on SQLite, alice's stats row on PostgreSQL.
    with db.engine.connect() as holder:
        holder.execute(update(PlayerStats).filter_by(player_id=alice.id).values(matches_won=0))
        with pytest.raises(DatabaseUnavailable):
            with unit_of_work(impatient_session):
                record_match_result(impatient_session, match.id)
        holder.rollback()

    with unit_of_work(impatient_session):
        outcome = record_match_result(impatient_session, match.id)
    assert len(outcome.recorded) == 2
    session.rollback()
    assert session.get(PlayerStats, (alice.id, "all")).matches_won == 1
