"""Result services: what a match, a registration or a tournament result gives each player."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import T0
from webapp.domain.errors import Invalid, NotFound
from webapp.domain.projection import expected_stats
from webapp.domain.reconciliation import find_drift
from webapp.domain.recording import RecordStatus
from webapp.domain.results import (
    record_match_result,
    record_registration,
    record_tournament_result,
)
from webapp.models import ActivityEvent, PlayerStats, TeamMembership
from webapp.transaction import unit_of_work

MATCH_AT = T0 + timedelta(hours=1)


def events_of(session, player) -> list[ActivityEvent]:
    events = session.scalars(
        select(ActivityEvent).where(ActivityEvent.player_id == player.id).order_by(ActivityEvent.id)
    ).all()
    return list(events)


def types_of(session, player) -> list[str]:
    return sorted(event.event_type for event in events_of(session, player))


def stats(session, player, scope="all") -> dict[str, int]:
    session.expire_all()
    row = session.get(PlayerStats, (player.id, scope))
    return row.as_dict() if row else {}


def nonzero(values: dict[str, int]) -> dict[str, int]:
    return {name: value for name, value in values.items() if value}


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def add_membership(session, team, player, joined_at, left_at=None) -> None:
    session.add(TeamMembership(team_id=team.id, player_id=player.id, joined_at=joined_at, left_at=left_at))
    session.commit()


def assert_projection_consistent(session) -> None:
    stored = {
        (row.player_id, row.scope): row.as_dict()
        for row in session.scalars(select(PlayerStats))
        if any(row.as_dict().values())
    }
    assert stored == expected_stats(session)
    assert find_drift(session).drifts == []
    session.rollback()


# Matches


def test_a_completed_match_gives_won_to_the_winner_and_lost_to_the_loser(
    session, make_player, make_tournament, make_match
):
    alice, bob = make_player("alice"), make_player("bob")
    match = make_match(make_tournament(), alice, bob, winner="b", round="QF")
    with unit_of_work(session):
        outcome = record_match_result(session, match.id)

    assert len(outcome.recorded) == 2
    [won] = events_of(session, bob)
    [lost] = events_of(session, alice)
    assert (won.event_type, lost.event_type) == ("match_won", "match_lost")
    assert won.occurred_at == MATCH_AT
    assert (won.source_model, won.source_id) == ("match", match.id)
    assert won.details == {"round": "QF", "side": "b", "opponent_player_ids": [alice.id]}
    assert lost.details == {"round": "QF", "side": "a", "opponent_player_ids": [bob.id]}
    assert nonzero(stats(session, bob)) == {"matches_played": 1, "matches_won": 1}
    assert nonzero(stats(session, alice)) == {"matches_played": 1, "matches_lost": 1}
    assert_projection_consistent(session)


def test_a_team_match_reaches_the_members_at_the_time_of_the_match_only(
    session, make_player, make_team, make_tournament, make_match
):
    alice, dave, bob, carol = (make_player(n) for n in ("alice", "dave", "bob", "carol"))
    erin, frank = make_player("erin"), make_player("frank")
    owls = make_team("Night Owls", [alice, dave])
    add_membership(session, owls, bob, T0 - timedelta(days=100), left_at=T0 - timedelta(days=1))
    add_membership(session, owls, carol, MATCH_AT + timedelta(minutes=1))
    larks = make_team("Larks", [erin, frank])
    match = make_match(make_tournament(is_team_based=True), owls, larks, winner="a")

    with unit_of_work(session):
        outcome = record_match_result(session, match.id)

    assert len(outcome.recorded) == 4
    for member in (alice, dave):
        [event] = events_of(session, member)
        assert event.event_type == "match_won"
        assert event.team_id == owls.id
        assert event.details == {
            "round": "R1", "side": "a", "opponent_player_ids": sorted([erin.id, frank.id]),
            "opponent_team_id": larks.id,
        }
        assert stats(session, member)["matches_won"] == 1
    for member in (erin, frank):
        [event] = events_of(session, member)
        assert event.event_type == "match_lost"
        assert event.team_id == larks.id
        assert event.details["opponent_player_ids"] == sorted([alice.id, dave.id])
        assert event.details["opponent_team_id"] == owls.id
    assert events_of(session, bob) == [], "bob had left the team before the match"
    assert events_of(session, carol) == [], "carol joined the team after the match"
    assert stats(session, bob) == {} and stats(session, carol) == {}
    assert_projection_consistent(session)


def test_a_player_against_a_team_names_the_opposing_team_only_on_the_player_side(
    session, make_player, make_team, make_tournament, make_match
):
    alice, erin, frank = make_player("alice"), make_player("erin"), make_player("frank")
    larks = make_team("Larks", [erin, frank])
    match = make_match(make_tournament(), alice, larks, winner="a")
    with unit_of_work(session):
        record_match_result(session, match.id)

    [won] = events_of(session, alice)
    assert won.team_id is None
    assert won.details["opponent_team_id"] == larks.id
    [lost] = events_of(session, erin)
    assert lost.team_id == larks.id
    assert "opponent_team_id" not in lost.details
    assert lost.details["opponent_player_ids"] == [alice.id]


def test_a_forfeit_gives_forfeit_events_and_never_won_or_lost(
    session, make_player, make_team, make_tournament, make_match
):
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    pair = make_team("Pair", [bob, carol])
    match = make_match(make_tournament(), alice, pair, state="forfeit", winner="b")
    with unit_of_work(session):
        record_match_result(session, match.id)

    assert types_of(session, alice) == ["match_forfeit_lost"]
    assert types_of(session, bob) == ["match_forfeit_won"]
    assert types_of(session, carol) == ["match_forfeit_won"]
    assert nonzero(stats(session, alice)) == {"forfeit_losses": 1}
    assert nonzero(stats(session, bob)) == {"forfeit_wins": 1}
    assert nonzero(stats(session, bob, "public")) == {"forfeit_wins": 1}
    assert_projection_consistent(session)


# Registrations and tournament results


@pytest.mark.parametrize(
    "status, expected_types",
    [
        ("registered", ["tournament_registered"]),
        ("checked_in", ["tournament_checked_in", "tournament_registered"]),
        ("completed", ["tournament_checked_in", "tournament_registered"]),
        ("no_show", ["tournament_registered"]),
        ("withdrawn", ["tournament_registered"]),
    ],
)
def test_a_registration_gives_check_in_only_to_those_who_took_part(
    session, make_player, make_tournament, make_registration, status, expected_types
):
    alice = make_player("alice")
    registration = make_registration(make_tournament(), alice, status=status)
    with unit_of_work(session):
        record_registration(session, registration.id)

    assert types_of(session, alice) == expected_types
    played = 1 if "tournament_checked_in" in expected_types else 0
    assert stats(session, alice)["tournaments_played"] == played
    assert_projection_consistent(session)


def test_a_team_registration_reaches_its_members_when_registered_and_when_checking_in(
    session, make_player, make_team, make_tournament, make_registration
):
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    team = make_team("Owls", [alice], joined_at=T0 - timedelta(days=30))
    # Bob was on the team when it registered but left before the tournament began;
    # carol joined in between.
    add_membership(session, team, bob, T0 - timedelta(days=30), left_at=T0 - timedelta(days=1))
    add_membership(session, team, carol, T0 - timedelta(days=2))
    registration = make_registration(
        make_tournament(is_team_based=True), team, status="checked_in", registered_at=T0 - timedelta(days=3)
    )
    with unit_of_work(session):
        record_registration(session, registration.id)

    assert types_of(session, alice) == ["tournament_checked_in", "tournament_registered"]
    assert types_of(session, bob) == ["tournament_registered"]
    assert types_of(session, carol) == ["tournament_checked_in"]
    assert all(e.team_id == team.id for e in events_of(session, alice))


def test_a_tournament_result_completes_it_for_those_who_played_and_never_for_no_shows(
    session, make_player, make_tournament, make_registration, make_result
):
    alice, bob, carol, dave, erin = (make_player(n) for n in ("alice", "bob", "carol", "dave", "erin"))
    cup = make_tournament()
    make_registration(cup, alice, status="completed")
    make_registration(cup, bob, status="checked_in")
    make_registration(cup, carol, status="no_show")
    make_registration(cup, dave, status="withdrawn")
    make_registration(cup, erin, status="registered")
    result = make_result(cup, alice)

    with unit_of_work(session):
        record_tournament_result(session, cup.id)

    assert types_of(session, alice) == ["tournament_completed", "tournament_won"]
    assert types_of(session, bob) == ["tournament_completed"]
    for absent in (carol, dave, erin):
        assert types_of(session, absent) == [], "no-shows and withdrawals never complete"
        assert stats(session, absent) == {}
    [completed] = [e for e in events_of(session, bob)]
    assert completed.occurred_at == result.decided_at
    assert completed.tournament_id == cup.id
    assert stats(session, bob)["tournaments_completed"] == 1
    assert_projection_consistent(session)


def test_a_solo_tournament_win_counts_as_a_solo_win(
    session, make_player, make_tournament, make_registration, make_result
):
    alice = make_player("alice")
    cup = make_tournament()
    make_registration(cup, alice)
    make_result(cup, alice)
    with unit_of_work(session):
        record_tournament_result(session, cup.id)

    [win] = [e for e in events_of(session, alice) if e.event_type == "tournament_won"]
    assert win.team_id is None
    assert win.details == {"is_team_win": False}
    assert nonzero(stats(session, alice)) == {
        "tournaments_completed": 1, "tournaments_won": 1, "solo_tournament_wins": 1,
    }


def test_a_team_tournament_win_reaches_every_member_at_the_time_as_a_team_win(
    session, make_player, make_team, make_tournament, make_registration, make_result
):
    alice, bob, carol, dave = (make_player(n) for n in ("alice", "bob", "carol", "dave"))
    team = make_team("Owls", [alice, bob])
    add_membership(session, team, carol, T0 - timedelta(days=200), left_at=T0 + timedelta(days=1))
    decided_at = T0 + timedelta(days=2)
    add_membership(session, team, dave, decided_at + timedelta(days=1))
    cup = make_tournament(is_team_based=True)
    make_registration(cup, team)
    make_result(cup, team, decided_at=decided_at)

    with unit_of_work(session):
        record_tournament_result(session, cup.id)

    for member in (alice, bob):
        [win] = [e for e in events_of(session, member) if e.event_type == "tournament_won"]
        assert win.team_id == team.id
        assert win.details == {"is_team_win": True}
        assert win.occurred_at == decided_at
        assert nonzero(stats(session, member)) == {
            "tournaments_completed": 1, "tournaments_won": 1, "team_tournament_wins": 1,
        }
    assert events_of(session, carol) == [], "carol left the team before the result"
    assert events_of(session, dave) == [], "dave joined the team after the result"
    assert_projection_consistent(session)


def test_events_of_a_private_tournament_are_private_and_left_out_of_public_stats(
    session, make_player, make_tournament, make_match, make_registration, make_result
):
    alice, bob = make_player("alice"), make_player("bob")
    invitational = make_tournament("Invitational", is_private=True)
    open_cup = make_tournament("Open Cup")
    registration_ids = []
    for cup in (invitational, open_cup):
        registration_ids += [make_registration(cup, alice).id, make_registration(cup, bob).id]
        make_result(cup, alice)
    private_match = make_match(invitational, alice, bob, winner="a")
    public_match = make_match(open_cup, alice, bob, winner="b")

    with unit_of_work(session):
        for cup in (invitational, open_cup):
            record_tournament_result(session, cup.id)
        record_match_result(session, private_match.id)
        record_match_result(session, public_match.id)
        for registration_id in registration_ids:
            record_registration(session, registration_id)

    events = session.scalars(select(ActivityEvent)).all()
    assert {e.is_private for e in events if e.tournament_id == invitational.id} == {True}
    assert {e.is_private for e in events if e.tournament_id == open_cup.id} == {False}
    assert nonzero(stats(session, alice)) == {
        "matches_played": 2, "matches_won": 1, "matches_lost": 1, "tournaments_played": 2,
        "tournaments_completed": 2, "tournaments_won": 2, "solo_tournament_wins": 2,
    }
    assert nonzero(stats(session, alice, "public")) == {
        "matches_played": 1, "matches_lost": 1, "tournaments_played": 1,
        "tournaments_completed": 1, "tournaments_won": 1, "solo_tournament_wins": 1,
    }
    assert nonzero(stats(session, bob, "public")) == {
        "matches_played": 1, "matches_won": 1, "tournaments_played": 1, "tournaments_completed": 1,
    }
    assert_projection_consistent(session)


# Idempotency


def test_recording_the_same_results_twice_changes_nothing_the_second_time(
    session, make_player, make_team, make_tournament, make_match, make_registration, make_result
):
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    team = make_team("Owls", [bob, carol])
    cup = make_tournament(is_team_based=True)
    registration = make_registration(cup, team)
    match = make_match(cup, alice, team, winner="b")
    make_result(cup, team)

    def record_everything():
        with unit_of_work(session):
            return [
                record_registration(session, registration.id),
                record_match_result(session, match.id),
                record_tournament_result(session, cup.id),
            ]

    first = record_everything()
    events_before = count(session, ActivityEvent)
    stats_before = {p.id: stats(session, p) for p in (alice, bob, carol)}
    second = record_everything()

    assert sum(len(o.recorded) for o in first) == events_before == 11
    assert all(o.status is RecordStatus.DUPLICATE for batch in second for o in batch.outcomes)
    assert [o.event_id for b in second for o in b.outcomes] == [o.event_id for b in first for o in b.outcomes]
    assert count(session, ActivityEvent) == events_before
    assert {p.id: stats(session, p) for p in (alice, bob, carol)} == stats_before
    assert_projection_consistent(session)


# Bad input


def _match_in_state(state):
    def build(f):
        match = f.make_match(f.cup, f.alice, f.bob, state=state)
        return lambda s: record_match_result(s, match.id)

    return build


def _unknown_match(f):
    return lambda s: record_match_result(s, 987654)


def _unknown_tournament(f):
    return lambda s: record_tournament_result(s, 987654)


def _unknown_registration(f):
    return lambda s: record_registration(s, 987654)


def _tournament_without_result(f):
    f.make_registration(f.cup, f.alice)
    return lambda s: record_tournament_result(s, f.cup.id)


def _competition_without_winner(f):
    nation_cup = f.make_tournament("Nation Cup", is_team_based=True, awards_winner=False)
    team = f.make_team("Nation", [f.alice, f.bob])
    f.make_registration(nation_cup, team)
    f.make_result(nation_cup, team)
    return lambda s: record_tournament_result(s, nation_cup.id)


def _team_match_without_members(f):
    gone = f.make_team("Gone", [f.carol], joined_at=T0 - timedelta(days=60), left_at=T0 - timedelta(days=30))
    match = f.make_match(f.cup, f.alice, gone, winner="a")
    return lambda s: record_match_result(s, match.id)


def _team_win_without_members(f):
    gone = f.make_team("Gone", [f.carol], joined_at=T0 - timedelta(days=60), left_at=T0 - timedelta(days=30))
    f.make_registration(f.cup, f.alice)
    f.make_result(f.cup, gone)
    return lambda s: record_tournament_result(s, f.cup.id)


@pytest.mark.parametrize(
    "build, error, message",
    [
        pytest.param(_match_in_state("scheduled"), Invalid, "is scheduled", id="scheduled-match"),
        pytest.param(_match_in_state("disputed"), Invalid, "is disputed", id="disputed-match"),
        pytest.param(_match_in_state("void"), Invalid, "is void", id="void-match"),
        pytest.param(_unknown_match, NotFound, "match 987654 does not exist", id="unknown-match"),
        pytest.param(_unknown_tournament, NotFound, "tournament 987654 does not exist", id="unknown-tournament"),
        pytest.param(_unknown_registration, NotFound, "registration 987654 does not exist",
                     id="unknown-registration"),
        pytest.param(_tournament_without_result, Invalid, "has no result", id="no-result"),
        pytest.param(_competition_without_winner, Invalid, "nobody wins", id="awards-no-winner"),
        pytest.param(_team_match_without_members, Invalid, "had no members", id="empty-team-match"),
        pytest.param(_team_win_without_members, Invalid, "had no members", id="empty-team-win"),
    ],
)
def test_bad_results_are_refused_and_write_nothing(
    session, make_player, make_team, make_tournament, make_match, make_registration, make_result,
    build, error, message,
):
    class Fixtures:
        pass

    f = Fixtures()
    f.make_team, f.make_tournament, f.make_match = make_team, make_tournament, make_match
    f.make_registration, f.make_result = make_registration, make_result
    f.alice, f.bob, f.carol = make_player("alice"), make_player("bob"), make_player("carol")
    f.cup = make_tournament()
    record = build(f)

    with pytest.raises(error, match=message):
        with unit_of_work(session):
            record(session)
    assert count(session, ActivityEvent) == 0
    assert count(session, PlayerStats) == 0


def test_a_match_with_one_player_on_both_sides_is_refused(
    session, make_player, make_team, make_tournament, make_match
):
    alice, bob, carol = make_player("alice"), make_player("bob"), make_player("carol")
    owls = make_team("Owls", [alice, bob])
    larks = make_team("Larks", [bob, carol])
    match = make_match(make_tournament(), owls, larks, winner="a")

    with pytest.raises(Invalid, match=f"player {bob.id} is on both sides of match {match.id}"):
        with unit_of_work(session):
            record_match_result(session, match.id)
    assert count(session, ActivityEvent) == 0
