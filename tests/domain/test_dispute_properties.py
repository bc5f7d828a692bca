"""Any sequence of dispute resolutions leaves stats exact: a property-based test.

Hypothesis reports and resolves a handful of matches in any order: corrected
winners, voids, winners again after a void, resolutions prepared on a version
that has moved on (refused), double submits (replayed), resolutions of matches
with no open case (refused). Among the matches are a team match, a forfeit, a
match of a private tournament and a tournament's final, whose win follows its
winner. Afterwards reconciliation finds no drift, and the stored stats equal
what the test works out on its own from each match's current winner.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from tests.conftest import T0
from webapp.domain.audit import Actor
from webapp.domain.disputes import MatchChanged, report_dispute, resolve_dispute
from webapp.domain.errors import Invalid
from webapp.domain.reconciliation import find_drift
from webapp.domain.results import record_match_result, record_tournament_result
from webapp.models import (
    ActivityEvent,
    Dispute,
    DisputeNote,
    DisputeReport,
    DisputeView,
    Match,
    MatchResolution,
    PlayerStats,
    TournamentResult,
)
from webapp.transaction import unit_of_work

STAFF = Actor(staff_id=None, ip_address="10.0.0.9")
ACTIONS = ("report", "a", "b", "void", "stale", "repeat")


@dataclass
class Played:
    """A match of the world and what the test expects of it."""

    id: int
    sides: dict[str, list[int]]  # side -> players
    team: dict[str, int | None]
    forfeit: bool
    private: bool
    final_of: int | None  # tournament result id when it is the final
    winner: str | None = "a"
    disputed: bool = False
    last_token: str | None = None


@pytest.fixture
def world(session, make_player, make_team, make_tournament, make_match, make_result):
    p = [make_player(f"disp{n}") for n in range(8)]
    owls, larks = make_team("Owls", p[4:6]), make_team("Larks", p[6:8])
    cup, invitational = make_tournament("Cup"), make_tournament("Invitational", is_private=True)
    league = make_tournament("League", is_team_based=True)
    final = make_match(cup, p[0], p[1], is_final=True, round="F", at=T0 + timedelta(hours=5))
    result = make_result(cup, p[0])
    matches = [
        (make_match(cup, p[0], p[2]), {"a": [p[0].id], "b": [p[2].id]}, {"a": None, "b": None}, False, False, None),
        (make_match(cup, p[1], p[3], state="forfeit", round="R2"), {"a": [p[1].id], "b": [p[3].id]},
         {"a": None, "b": None}, True, False, None),
        (make_match(invitational, p[2], p[3]), {"a": [p[2].id], "b": [p[3].id]}, {"a": None, "b": None},
         False, True, None),
        (make_match(league, owls, larks), {"a": [p[4].id, p[5].id], "b": [p[6].id, p[7].id]},
         {"a": owls.id, "b": larks.id}, False, False, None),
        (final, {"a": [p[0].id], "b": [p[1].id]}, {"a": None, "b": None}, False, False, result.id),
    ]
    return {
        "players": [x.id for x in p],
        "cup": cup.id,
        "result": result.id,
        "winner_player": p[0].id,
        "matches": [Played(m.id, sides, team, forfeit, private, final_of)
                    for m, sides, team, forfeit, private, final_of in matches],
    }


def start_over(session, world) -> list[Played]:
    """Forget every dispute and event, put the matches back as played, and record them afresh."""
    session.rollback()
    with unit_of_work(session):
        for model in (MatchResolution, DisputeView, DisputeNote, DisputeReport, Dispute, ActivityEvent,
                      PlayerStats):
            session.execute(delete(model))
        for played in world["matches"]:
            session.execute(update(Match).where(Match.id == played.id).values(
                state="forfeit" if played.forfeit else "completed", winner_side="a", version=1))
        # A voided final left the result void.
        session.execute(update(TournamentResult).where(TournamentResult.id == world["result"]).values(
            status="decided", winner_player_id=world["winner_player"], winner_team_id=None))
    session.expire_all()
    with unit_of_work(session):
        for played in world["matches"]:
            record_match_result(session, played.id)
        record_tournament_result(session, world["cup"])
    return [Played(m.id, m.sides, m.team, m.forfeit, m.private, m.final_of) for m in world["matches"]]


def expected_stats(world, matches: list[Played]) -> dict:
    stats: dict = defaultdict(Counter)
    for m in matches:
        if m.winner is None:
            continue
        loser = "b" if m.winner == "a" else "a"
        scopes = ("all",) if m.private else ("all", "public")
        for scope in scopes:
            for player in m.sides[m.winner]:
                stats[(player, scope)].update(
                    {"forfeit_wins": 1} if m.forfeit else {"matches_played": 1, "matches_won": 1})
                if m.final_of:
                    stats[(player, scope)].update({"tournaments_won": 1, "solo_tournament_wins": 1})
            for player in m.sides[loser]:
                stats[(player, scope)].update(
                    {"forfeit_losses": 1} if m.forfeit else {"matches_played": 1, "matches_lost": 1})
    return {key: dict(+values) for key, values in stats.items() if +values}


def stored_stats(session) -> dict:
    session.expire_all()
    return {
        (row.player_id, row.scope): {k: v for k, v in row.as_dict().items() if v}
        for row in session.scalars(select(PlayerStats))
        if any(row.as_dict().values())
    }


def act(session, played: Played, action: str, n: int) -> None:
    session.expire_all()
    version = session.get(Match, played.id).version
    if action == "report":
        with unit_of_work(session):
            report_dispute(session, STAFF, played.id, "the result is wrong", reporter="DC-1")
        played.disputed = True
    elif action == "repeat":
        if played.last_token is None:
            return
        with unit_of_work(session):
            assert resolve_dispute(session, STAFF, played.id, "a", "again", expected_version=version - 1,
                                   token=played.last_token).replayed
    elif action == "stale":
        if not played.disputed:
            return
        with pytest.raises(MatchChanged), unit_of_work(session):
            resolve_dispute(session, STAFF, played.id, "void", "late", expected_version=version - 1,
                            token=f"stale-{n}")
    elif not played.disputed:
        with pytest.raises(Invalid), unit_of_work(session):
            resolve_dispute(session, STAFF, played.id, action, "no case", expected_version=version,
                            token=f"none-{n}")
    else:
        played.last_token = f"{played.id}-{n}"
        with unit_of_work(session):
            resolve_dispute(session, STAFF, played.id, action, "evidence", expected_version=version,
                            token=played.last_token)
        played.winner = None if action == "void" else action
        played.disputed = False


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(ACTIONS)), min_size=1, max_size=10))
def test_any_sequence_of_resolutions_leaves_stats_equal_to_the_current_winners(session, world, steps):
    matches = start_over(session, world)
    for n, (index, action) in enumerate(steps):
        act(session, matches[index], action, n)

    assert stored_stats(session) == expected_stats(world, matches)
    assert find_drift(session).drifts == []
    session.expire_all()
    result = session.get(TournamentResult, world["result"])
    final = matches[4]
    if final.winner is not None:
        assert result.winner_player_id == final.sides[final.winner][0]
