"""Disputes: reports, case files and resolutions of contested matches.

A resolution never edits an event. It reverses whatever outcome is currently
effective for the match (the original events, minus those already reversed,
plus the events of earlier resolutions) and records the corrected outcome as
new events sourced from the resolution row.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from webapp.domain.results import TeamRoster
from webapp.models.competitions import Match
from webapp.models.disputes import Dispute


def players_with_open_disputes(session: Session, player_ids: Iterable[int] | None = None) -> set[int]:
    """Return the players on either side of a match with an open dispute.

    Team sides count every member of the team at the time of the match, the
    players the match's events went to.

    :param player_ids: only these players are considered (``None``: all).
    """
    wanted = None if player_ids is None else {int(p) for p in player_ids}
    if wanted is not None and not wanted:
        return set()
    matches = list(
        session.scalars(
            select(Match).join(Dispute, Dispute.match_id == Match.id).where(Dispute.status == "open")
        )
    )
    roster = TeamRoster.load(
        session,
        [t for m in matches for t in (m.side_a_team_id, m.side_b_team_id) if t is not None],
    )
    involved: set[int] = set()
    for match in matches:
        at = match.completed_at or match.scheduled_at
        for side in ("a", "b"):
            player_id, team_id = match.side_entrant(side)
            if team_id is None:
                involved.add(player_id)
            else:
                involved.update(roster.members(team_id, at))
    return involved if wanted is None else involved & wanted
