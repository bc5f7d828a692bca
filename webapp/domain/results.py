"""Turning the platform's results into activity events.

The live path (the platform reporting a result), the demo data and the
backfill all derive events here, so a match or tournament gives the same
events whichever way it arrives:

- a completed match gives ``match_won`` to every member of the winning side
  and ``match_lost`` to every member of the other;
- a forfeit gives ``match_forfeit_won`` / ``match_forfeit_lost``, never won/lost;
- a registration gives ``tournament_registered``, and ``tournament_checked_in``
  once checked in; no-shows and withdrawals never get further;
- a tournament result gives ``tournament_won`` to the winner (every member of
  the winning team at the time, with the team id) and ``tournament_completed``
  to every entrant that played it.

Team results reach the members of the team at the time of the result.

Once a dispute resolution has corrected a match, the match gives no events of
its own any more: its outcome is the resolution's events (see
``webapp.domain.disputes``), so a repeated report or a backfill cannot count
the corrected result twice. Likewise the tournament win of a final it decided.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from webapp.domain.errors import Invalid, NotFound
from webapp.domain.recording import BatchOutcome, NewEvent, record_events
from webapp.models.competitions import Match, Registration, Tournament, TournamentResult
from webapp.models.disputes import MatchResolution
from webapp.models.players import TeamMembership

# Registration statuses of entrants who took part in the tournament.
PLAYED_STATUSES = ("checked_in", "completed")


class TeamRoster:
    """Team memberships over time, loaded once for many results."""

    def __init__(self, spans: Iterable[tuple[int, int, datetime, datetime | None]]) -> None:
        self._spans: dict[int, list[tuple[int, datetime, datetime | None]]] = defaultdict(list)
        for team_id, player_id, joined_at, left_at in spans:
            self._spans[team_id].append((player_id, joined_at, left_at))

    @classmethod
    def load(cls, session: Session, team_ids: Iterable[int]) -> TeamRoster:
        """Load the memberships of ``team_ids``."""
        ids = sorted(set(team_ids))
        spans = []
        for start in range(0, len(ids), 2_000):
            spans.extend(
                session.execute(
                    select(
                        TeamMembership.team_id,
                        TeamMembership.player_id,
                        TeamMembership.joined_at,
                        TeamMembership.left_at,
                    ).where(TeamMembership.team_id.in_(ids[start : start + 2_000]))
                ).all()
            )
        return cls(spans)

    def members(self, team_id: int, at: datetime) -> list[int]:
        """Return the players who were members of ``team_id`` at ``at``."""
        return sorted(
            player_id
            for player_id, joined_at, left_at in self._spans.get(team_id, ())
            if joined_at <= at and (left_at is None or at < left_at)
        )

    def entrant_players(self, player_id: int | None, team_id: int | None, at: datetime) -> list[int]:
        """Return who an entrant (a player, or a team at ``at``) stands for."""
        if team_id is None:
            return [player_id] if player_id is not None else []
        members = self.members(team_id, at)
        if not members:
            raise Invalid(f"team {team_id} had no members at {at.isoformat()}")
        return members


def match_events(match: Match, roster: TeamRoster, *, origin: str = "live",
                 origin_id: int | None = None) -> list[NewEvent]:
    """Return the events a decided match gives to every player on both sides."""
    if match.state == "completed":
        winner_type, loser_type = "match_won", "match_lost"
    elif match.state == "forfeit":
        winner_type, loser_type = "match_forfeit_won", "match_forfeit_lost"
    else:
        raise Invalid(
            f"match {match.id} is {match.state}: only completed and forfeit matches have results"
        )
    if match.winner_side not in ("a", "b"):
        raise Invalid(f"match {match.id} has no winner side")
    at = match.completed_at or match.scheduled_at
    loser_side = "b" if match.winner_side == "a" else "a"
    sides = {side: match.side_entrant(side) for side in ("a", "b")}
    players = {side: roster.entrant_players(*sides[side], at) for side in ("a", "b")}
    # Someone on both teams at once would be given both the win and the loss.
    on_both_sides = sorted(set(players["a"]) & set(players["b"]))
    if on_both_sides:
        raise Invalid(
            f"player {', '.join(map(str, on_both_sides))} is on both sides of match {match.id}"
        )
    events = []
    for side, kind in ((match.winner_side, winner_type), (loser_side, loser_type)):
        other = "b" if side == "a" else "a"
        _, team_id = sides[side]
        metadata = {"round": match.round, "side": side, "opponent_player_ids": players[other]}
        if sides[other][1] is not None:
            metadata["opponent_team_id"] = sides[other][1]
        events.extend(
            NewEvent(
                player_id=player_id,
                event_type=kind,
                occurred_at=at,
                source_model="match",
                source_id=match.id,
                origin=origin,
                origin_id=origin_id,
                team_id=team_id,
                tournament_id=match.tournament_id,
                metadata=metadata,
            )
            for player_id in players[side]
        )
    return events


def registration_events(registration: Registration, tournament: Tournament, roster: TeamRoster, *,
                        origin: str = "live", origin_id: int | None = None) -> list[NewEvent]:
    """Return registration and check-in events for every player an entry stands for."""
    events = _entry_events(registration, tournament, roster, "tournament_registered",
                           registration.registered_at, origin, origin_id)
    if registration.status in PLAYED_STATUSES:
        events += _entry_events(registration, tournament, roster, "tournament_checked_in",
                                tournament.starts_at, origin, origin_id)
    return events


def _entry_events(registration: Registration, tournament: Tournament, roster: TeamRoster, kind: str,
                  at: datetime, origin: str, origin_id: int | None) -> list[NewEvent]:
    """Return one ``kind`` event, sourced from the registration, per player the entry stood for at ``at``."""
    return [
        NewEvent(
            player_id=player_id,
            event_type=kind,
            occurred_at=at,
            source_model="registration",
            source_id=registration.id,
            origin=origin,
            origin_id=origin_id,
            team_id=registration.team_id,
            tournament_id=tournament.id,
            metadata={"registration_id": registration.id},
        )
        for player_id in roster.entrant_players(registration.player_id, registration.team_id, at)
    ]


def tournament_result_events(result: TournamentResult, tournament: Tournament,
                             registrations: Sequence[Registration], roster: TeamRoster, *,
                             origin: str = "live", origin_id: int | None = None) -> list[NewEvent]:
    """Return tournament_won for the winner and tournament_completed for everyone who played.

    A void result (its final voided by a dispute resolution) has no winner: only completions.
    """
    if not tournament.awards_winner:
        raise Invalid(f"tournament {tournament.id} is a team competition that nobody wins")
    at = result.decided_at
    winners = [] if result.is_void else roster.entrant_players(
        result.winner_player_id, result.winner_team_id, at)
    events = [
        NewEvent(
            player_id=player_id,
            event_type="tournament_won",
            occurred_at=at,
            source_model="tournament_result",
            source_id=result.id,
            origin=origin,
            origin_id=origin_id,
            team_id=result.winner_team_id,
            tournament_id=tournament.id,
            metadata={"is_team_win": result.winner_team_id is not None},
        )
        for player_id in winners
    ]
    events.extend(completion_events(tournament, registrations, roster, at, origin=origin, origin_id=origin_id))
    return events


def completion_events(tournament: Tournament, registrations: Sequence[Registration], roster: TeamRoster,
                      at: datetime, *, origin: str = "live", origin_id: int | None = None) -> list[NewEvent]:
    """Return tournament_completed for entrants who played; never for no-shows or withdrawals."""
    return [
        event
        for registration in registrations
        if registration.status in PLAYED_STATUSES
        for event in _entry_events(registration, tournament, roster, "tournament_completed", at,
                                   origin, origin_id)
    ]


def record_match_result(session: Session, match_id: int, *, origin: str = "live",
                        origin_id: int | None = None) -> BatchOutcome:
    """Record the events of one decided match."""
    match = session.get(Match, match_id)
    if match is None:
        raise NotFound(f"match {match_id} does not exist")
    if is_resolved(session, match.id):
        # Its outcome's events come from its dispute resolutions; the match's own
        # would count the corrected result a second time.
        return BatchOutcome([])
    roster = TeamRoster.load(session, [t for t in (match.side_a_team_id, match.side_b_team_id) if t])
    return record_events(session, match_events(match, roster, origin=origin, origin_id=origin_id))


def is_resolved(session: Session, match_id: int) -> bool:
    """Return whether a dispute resolution has corrected the match's outcome."""
    return session.scalar(select(exists().where(MatchResolution.match_id == match_id))) or False


def resolved_result_ids(session: Session, result_ids: Iterable[int]) -> set[int]:
    """Return those of ``result_ids`` whose winner a resolution of the tournament's final decided."""
    ids = sorted(set(result_ids))
    resolved: set[int] = set()
    for start in range(0, len(ids), 2_000):
        resolved.update(session.scalars(
            select(MatchResolution.tournament_result_id).where(
                MatchResolution.tournament_result_id.in_(ids[start : start + 2_000]))
        ))
    return resolved


def without_corrected_wins(events: Sequence[NewEvent], resolved_results: set[int]) -> list[NewEvent]:
    """Leave out tournament wins of results whose winner a dispute resolution decided.

    The resolution recorded the win of the winner it named; the result's own
    event for that winner would count it twice.
    """
    return [
        e for e in events
        if not (e.event_type == "tournament_won" and e.source_model == "tournament_result"
                and e.source_id in resolved_results)
    ]


def resolved_match_ids(session: Session, match_ids: Iterable[int]) -> set[int]:
    """Return those of ``match_ids`` whose outcome a dispute resolution corrected."""
    ids = sorted(set(match_ids))
    resolved: set[int] = set()
    for start in range(0, len(ids), 2_000):
        resolved.update(session.scalars(
            select(MatchResolution.match_id).where(MatchResolution.match_id.in_(ids[start : start + 2_000]))
        ))
    return resolved


def record_registration(session: Session, registration_id: int, *, origin: str = "live",
                        origin_id: int | None = None) -> BatchOutcome:
    """Record the events of one registration (and its check-in, if any)."""
    registration = session.get(Registration, registration_id)
    if registration is None:
        raise NotFound(f"registration {registration_id} does not exist")
    tournament = session.get(Tournament, registration.tournament_id)
    roster = TeamRoster.load(session, [registration.team_id] if registration.team_id else [])
    return record_events(
        session, registration_events(registration, tournament, roster, origin=origin, origin_id=origin_id)
    )


def record_tournament_result(session: Session, tournament_id: int, *, origin: str = "live",
                             origin_id: int | None = None) -> BatchOutcome:
    """Record the win and the completions of a decided tournament."""
    tournament = session.get(Tournament, tournament_id)
    if tournament is None:
        raise NotFound(f"tournament {tournament_id} does not exist")
    result = session.scalars(
        select(TournamentResult).where(TournamentResult.tournament_id == tournament_id)
    ).first()
    if result is None:
        raise Invalid(f"tournament {tournament_id} has no result yet")
    registrations = list(
        session.scalars(select(Registration).where(Registration.tournament_id == tournament_id))
    )
    team_ids = {r.team_id for r in registrations if r.team_id} | (
        {result.winner_team_id} if result.winner_team_id else set()
    )
    roster = TeamRoster.load(session, team_ids)
    events = tournament_result_events(result, tournament, registrations, roster, origin=origin,
                                      origin_id=origin_id)
    return record_events(session, without_corrected_wins(events, resolved_result_ids(session, [result.id])))
