"""``flask demo-data``: a deterministic history whose events follow the rules of live traffic."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import func, select

from tests.conftest import make_app
from webapp.domain.demo import DEFAULT_AS_OF
from webapp.domain.reconciliation import find_drift
from webapp.extensions import db
from webapp.models import (
    ActivityEvent,
    Base,
    Match,
    Player,
    PlayerStats,
    Registration,
    Team,
    TeamMembership,
    Tournament,
    TournamentResult,
)

SCALE = "0.03"
SEED = "7"
MATCH_RESULT_TYPES = {"match_won", "match_lost", "match_forfeit_won", "match_forfeit_lost"}
# The platform records the generator writes, compared whole between two runs.
RECORD_TABLES = (
    "players",
    "teams",
    "team_memberships",
    "tournaments",
    "registrations",
    "matches",
    "tournament_results",
    "placements",
)


def new_app(backend: str, fresh_database_url) -> Flask:
    app = make_app(fresh_database_url(backend))
    with app.app_context():
        upgrade()
        db.session.remove()
    return app


def run_demo_data(app: Flask, *args: str):
    return app.test_cli_runner().invoke(args=["demo-data", *args])


@contextmanager
def reading(app: Flask) -> Iterator:
    # One app at a time: Flask-SQLAlchemy picks a session's engine by the current app.
    with app.app_context():
        session = db.session()
        try:
            yield session
        finally:
            session.rollback()
            db.session.remove()


def dispose(app: Flask) -> None:
    with app.app_context():
        db.engine.dispose()


def event_facts(session) -> list[tuple]:
    """Every event by its key fields and payload; recorded_at (the wall clock) left out."""
    rows = session.execute(
        select(
            ActivityEvent.player_id,
            ActivityEvent.event_type,
            ActivityEvent.source_model,
            ActivityEvent.source_id,
            ActivityEvent.occurred_at,
            ActivityEvent.origin,
            ActivityEvent.team_id,
            ActivityEvent.tournament_id,
            ActivityEvent.is_private,
            ActivityEvent.details,
        )
    ).all()
    return sorted((*row[:-1], json.dumps(row[-1], sort_keys=True)) for row in rows)


def platform_records(session) -> dict[str, list[tuple]]:
    return {
        name: sorted(tuple(row) for row in session.execute(select(Base.metadata.tables[name])))
        for name in RECORD_TABLES
    }


def stored_stats(session) -> list[tuple]:
    rows = session.scalars(select(PlayerStats)).all()
    return sorted((row.player_id, row.scope, *row.as_dict().values()) for row in rows)


def snapshot(app: Flask) -> dict:
    """What one database holds after generation, read in the app's own context."""
    with reading(app) as session:
        return {
            "events": event_facts(session),
            "records": platform_records(session),
            "stats": stored_stats(session),
        }


@pytest.fixture(scope="module")
def demo_app(backend, fresh_database_url) -> Iterator[Flask]:
    """A fresh database per backend holding the demo history of SEED at SCALE."""
    app = new_app(backend, fresh_database_url)
    result = run_demo_data(app, "--seed", SEED, "--scale", SCALE)
    assert result.exit_code == 0, result.output
    app.config["DEMO_OUTPUT"] = result.output
    yield app
    dispose(app)


@pytest.fixture
def demo(demo_app) -> Iterator:
    """A session on the demo database."""
    with reading(demo_app) as session:
        yield session


def test_the_same_seed_and_scale_give_identical_records_and_events(
    demo_app, backend, fresh_database_url
):
    again = new_app(backend, fresh_database_url)
    other = new_app(backend, fresh_database_url)
    try:
        assert run_demo_data(again, "--seed", SEED, "--scale", SCALE).exit_code == 0
        assert run_demo_data(other, "--seed", "8", "--scale", SCALE).exit_code == 0
        first, second, third = snapshot(demo_app), snapshot(again), snapshot(other)
    finally:
        dispose(again)
        dispose(other)
    assert len(first["events"]) > 500
    assert second["events"] == first["events"]
    assert second["records"] == first["records"]
    assert second["stats"] == first["stats"]
    assert third["events"] != first["events"], "another seed is another history"
    assert third["records"]["players"] != first["records"]["players"]


def test_the_summary_reports_what_was_written(demo_app, demo):
    output = demo_app.config["DEMO_OUTPUT"]
    events = demo.scalar(select(func.count()).select_from(ActivityEvent))
    players = demo.scalar(select(func.count()).select_from(Player))
    assert "demo data written (seed 7, scale 0.03" in output
    assert re.search(rf"events recorded +{events:,}\n", output)
    assert players == 60, "2,000 players at scale 1.0"
    assert re.search(rf"players +{players:,}\n", output)


def test_the_history_spans_two_years_and_ends_at_as_of(demo):
    first, last = demo.execute(
        select(func.min(ActivityEvent.occurred_at), func.max(ActivityEvent.occurred_at))
    ).one()
    assert last <= DEFAULT_AS_OF
    assert DEFAULT_AS_OF - timedelta(days=731) <= first < DEFAULT_AS_OF - timedelta(days=300)
    upcoming = demo.scalars(select(Tournament).where(Tournament.starts_at > DEFAULT_AS_OF)).all()
    assert upcoming, "some tournaments have not started yet"


def test_as_of_moves_the_whole_history(demo_app, backend, fresh_database_url):
    later = new_app(backend, fresh_database_url)
    try:
        result = run_demo_data(
            later, "--seed", SEED, "--scale", SCALE, "--as-of", "2027-01-01T00:00:00Z"
        )
        assert result.exit_code == 0, result.output
        moved = snapshot(later)["events"]
    finally:
        dispose(later)
    shift = datetime(2027, 1, 1, tzinfo=UTC) - DEFAULT_AS_OF
    original = snapshot(demo_app)["events"]
    assert [(*fact[:4], fact[4] + shift, *fact[5:]) for fact in original] == moved


def test_every_registration_status_and_match_state_occurs(demo):
    statuses = set(demo.scalars(select(Registration.status).distinct()))
    states = set(demo.scalars(select(Match.state).distinct()))
    assert statuses == {"registered", "checked_in", "no_show", "withdrawn", "completed"}
    assert states == {"completed", "forfeit", "disputed", "scheduled"}
    visibilities = set(demo.scalars(select(Player.feed_visibility).distinct()))
    assert visibilities == {"public", "private"}


def test_forfeits_give_forfeit_events_and_never_a_match_won_or_lost(demo):
    forfeits = demo.scalars(select(Match.id).where(Match.state == "forfeit")).all()
    assert forfeits
    types = set(
        demo.scalars(
            select(ActivityEvent.event_type).where(
                ActivityEvent.source_model == "match", ActivityEvent.source_id.in_(forfeits)
            )
        )
    )
    assert types == {"match_forfeit_won", "match_forfeit_lost"}


def test_disputed_and_unplayed_matches_have_no_events(demo):
    unsettled = demo.scalars(
        select(Match.id).where(Match.state.in_(("disputed", "scheduled")))
    ).all()
    assert unsettled
    events = demo.scalar(
        select(func.count())
        .select_from(ActivityEvent)
        .where(ActivityEvent.source_model == "match", ActivityEvent.source_id.in_(unsettled))
    )
    assert events == 0


def test_every_disputed_match_waits_in_the_dispute_queue_with_its_report(demo):
    from webapp.domain.disputes import dispute_queue

    disputed = demo.scalars(select(Match.id).where(Match.state == "disputed")).all()
    queue = dispute_queue(demo)
    assert sorted(item.match.id for item in queue) == sorted(disputed)
    assert all(len(item.reports) == 1 and item.reports[0].reporter for item in queue)


def test_the_privacy_queue_holds_an_overdue_verified_export_and_a_new_erasure(demo_app, demo):
    from webapp.domain.gdpr_requests import list_requests, overdue
    from webapp.domain.staff import demo_account_email
    from webapp.models import StaffUser

    now = datetime.now(UTC)
    requests = {r.kind: r for r in list_requests(demo, now=now)}
    export, erasure = requests["export"], requests["erasure"]
    assert (export.status, export.received_at) == ("verified", DEFAULT_AS_OF - timedelta(days=40))
    assert export.identity_verification and export.verified_at is not None
    assert [r.id for r in overdue(demo, now=now)] == [export.id]
    assert (erasure.status, erasure.verified_at) == ("open", None)
    assert erasure.received_at == DEFAULT_AS_OF - timedelta(days=2)
    assert export.player_id != erasure.player_id
    privacy = demo.scalars(select(StaffUser).where(StaffUser.email == demo_account_email("privacy"))).one()
    assert export.handled_by_id == erasure.handled_by_id == privacy.id
    assert re.search(r"GDPR requests +2  \(export verified, erasure open\)\n",
                     demo_app.config["DEMO_OUTPUT"])


def test_the_monitoring_charts_show_the_demo_events_without_waiting_for_the_periodic_fold(demo):
    from webapp.domain.monitoring import event_volume, time_range

    events = demo.scalar(select(func.count()).select_from(ActivityEvent))
    for key in ("24h", "30d", "90d"):
        assert event_volume(demo, time_range(key)).total == events, key


def test_no_show_and_withdrawn_entrants_never_take_part(demo):
    absent = demo.scalars(
        select(Registration.id).where(Registration.status.in_(("no_show", "withdrawn")))
    ).all()
    assert absent
    types = set(
        demo.scalars(
            select(ActivityEvent.event_type).where(
                ActivityEvent.source_model == "registration", ActivityEvent.source_id.in_(absent)
            )
        )
    )
    assert types == {"tournament_registered"}


def test_matches_are_only_between_entrants_who_showed_up(demo):
    showed_up = {
        (r.tournament_id, r.player_id, r.team_id)
        for r in demo.scalars(
            select(Registration).where(Registration.status.in_(("checked_in", "completed")))
        )
    }
    matches = demo.scalars(select(Match)).all()
    assert matches
    for match in matches:
        for side in ("a", "b"):
            assert (match.tournament_id, *match.side_entrant(side)) in showed_up, match.id


def test_team_match_events_reach_exactly_the_members_at_the_time(demo):
    spans = defaultdict(list)
    for m in demo.scalars(select(TeamMembership)):
        spans[m.team_id].append(m)
    assert any(m.left_at is not None for ms in spans.values() for m in ms), "players leave teams"
    team_created = dict(demo.execute(select(Team.id, Team.created_at)).all())
    assert any(m.joined_at > team_created[team] for team, ms in spans.items() for m in ms), (
        "players join existing teams"
    )

    def members(team_id, at):
        return {
            m.player_id
            for m in spans[team_id]
            if m.joined_at <= at and (m.left_at is None or at < m.left_at)
        }

    received = defaultdict(set)
    for event in demo.scalars(
        select(ActivityEvent).where(
            ActivityEvent.source_model == "match", ActivityEvent.team_id.is_not(None)
        )
    ):
        received[(event.source_id, event.team_id)].add(event.player_id)
    team_matches = demo.scalars(
        select(Match).where(
            Match.side_a_team_id.is_not(None), Match.state.in_(("completed", "forfeit"))
        )
    ).all()
    assert team_matches
    roster_changed_during_a_tournament = False
    for match in team_matches:
        for team_id in (match.side_a_team_id, match.side_b_team_id):
            at_the_time = members(team_id, match.completed_at)
            assert len(at_the_time) >= 2
            assert received[(match.id, team_id)] == at_the_time, match.id
        roster_changed_during_a_tournament |= members(
            match.side_a_team_id, match.completed_at
        ) != members(match.side_a_team_id, DEFAULT_AS_OF)
    assert roster_changed_during_a_tournament, "some teams' rosters today differ from then"


def test_private_tournaments_give_private_events_only(demo):
    private = set(demo.scalars(select(Tournament.id).where(Tournament.is_private)))
    assert private
    by_privacy = defaultdict(set)
    for tournament_id, is_private in demo.execute(
        select(ActivityEvent.tournament_id, ActivityEvent.is_private).distinct()
    ):
        by_privacy[is_private].add(tournament_id)
    assert by_privacy[True] == private
    assert by_privacy[False] and not by_privacy[False] & private


def test_each_decided_tournament_has_one_final_won_by_its_winner(demo):
    results = demo.scalars(select(TournamentResult)).all()
    assert results
    for result in results:
        finals = demo.scalars(
            select(Match).where(Match.tournament_id == result.tournament_id, Match.is_final)
        ).all()
        assert len(finals) == 1
        final = finals[0]
        assert final.side_entrant(final.winner_side) == (
            result.winner_player_id,
            result.winner_team_id,
        )
        assert final.completed_at == result.decided_at
        winners = demo.scalars(
            select(ActivityEvent.player_id).where(
                ActivityEvent.event_type == "tournament_won",
                ActivityEvent.tournament_id == result.tournament_id,
            )
        ).all()
        assert winners
        if result.winner_player_id is not None:
            assert winners == [result.winner_player_id]
    undecided = demo.scalar(
        select(func.count())
        .select_from(Match)
        .where(Match.is_final, Match.state.not_in(("completed", "forfeit")))
    )
    assert undecided == 0


def test_stats_agree_with_events_after_generation(demo):
    report = find_drift(demo)
    assert report.players_checked == 60
    assert report.drifts == []
    won = demo.scalar(select(func.sum(PlayerStats.matches_won)).where(PlayerStats.scope == "all"))
    assert won == demo.scalar(
        select(func.count())
        .select_from(ActivityEvent)
        .where(ActivityEvent.event_type == "match_won")
    )


def test_a_database_with_players_is_refused_and_left_untouched(runner, session, make_player):
    make_player("alice")
    result = runner.invoke(args=["demo-data", "--scale", SCALE])
    assert result.exit_code == 1
    assert "already holds 1 player;" in result.output
    assert "nothing was written" in result.output
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Player)) == 1
    for model in (Team, Tournament, Match, ActivityEvent, PlayerStats):
        assert session.scalar(select(func.count()).select_from(model)) == 0, model


def test_if_empty_makes_a_populated_database_a_no_op(runner, session, make_player):
    make_player("alice")
    result = runner.invoke(args=["demo-data", "--scale", SCALE, "--if-empty"])
    assert result.exit_code == 0
    assert "demo data skipped" in result.output
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Player)) == 1
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 0


@pytest.mark.parametrize(
    ("option", "value"), [("--scale", "0"), ("--scale", "-1"), ("--as-of", "next tuesday")]
)
def test_bad_options_are_refused_before_anything_is_written(runner, session, option, value):
    result = runner.invoke(args=["demo-data", option, value])
    assert result.exit_code == 2
    assert option in result.output
    assert session.scalar(select(func.count()).select_from(Player)) == 0
