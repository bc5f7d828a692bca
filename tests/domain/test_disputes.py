"""Disputes: reports, case files, resolutions by reversal, and the holds they place."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import T0
from webapp.domain.archive import held_player_ids
from webapp.domain.disputes import players_with_open_disputes
from webapp.models import Dispute, TeamMembership
from webapp.transaction import unit_of_work


def _open_case(session, match, status="open"):
    with unit_of_work(session):
        session.add(Dispute(match_id=match.id, status=status, match_state_before=match.state,
                            winner_side_before=match.winner_side))


def test_open_disputes_hold_both_sides_including_the_team_members_of_the_time(
    session, make_player, make_team, make_tournament, make_match
):
    solo, left_before, member, other_member, bystander = (make_player() for _ in range(5))
    team = make_team("Owls", [member, other_member])
    with unit_of_work(session):
        # Left the team before the match: the match's events never reached them.
        session.add(TeamMembership(team_id=team.id, player_id=left_before.id,
                                   joined_at=T0 - timedelta(days=100), left_at=T0 - timedelta(days=50)))
    tournament = make_tournament(is_team_based=True)
    disputed = make_match(tournament, solo, team)
    settled = make_match(tournament, bystander, team, round="R2")
    _open_case(session, disputed)
    _open_case(session, settled, status="resolved")

    assert players_with_open_disputes(session) == {solo.id, member.id, other_member.id}
    assert players_with_open_disputes(session, [member.id, bystander.id, left_before.id]) == {member.id}
    assert players_with_open_disputes(session, []) == set()
    assert held_player_ids(session) >= {solo.id, member.id, other_member.id}
    assert bystander.id not in held_player_ids(session)
