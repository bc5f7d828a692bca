"""Results the platform reports as they happen, stored and turned into events.

The platform knows its records by its own references: a match by
``match_ref``, a tournament by ``tournament_ref`` (both stored as
``external_ref``), a player by public id and a team by our team id. A report
names the tournament, which must already be stored; the match itself is
created by its first report.

Reports are idempotent: the same report again changes nothing and says
``duplicate``. A report that disagrees with a match or tournament result
already decided is a ``Conflict``: decided results are corrected through
disputes, never by reporting them again. A report breaking a rule raises
``InvalidReport`` naming the field at fault, and nothing is written.

Concurrent reports of one match (or one tournament result) meet on the
unique external reference: the insert does nothing when the row exists, and
the later report then compares itself with the stored one like any repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from webapp.database import dialect_insert
from webapp.domain.errors import Conflict, Invalid
from webapp.domain.recording import BatchOutcome
from webapp.domain.results import TeamRoster, record_match_result, record_tournament_result
from webapp.models.base import utcnow
from webapp.models.competitions import Match, Placement, Tournament, TournamentResult
from webapp.models.players import Player, Team

DECIDED_STATES = ("completed", "forfeit")
MAX_PLACEMENTS = 1_024

Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
PublicId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
Round = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
RecordId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class InvalidReport(Invalid):
    """A report breaks a rule; ``field`` is the path of the field at fault (``side_a.player``)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Report(BaseModel):
    # Strict and closed, like event metadata: a misspelt field is an error, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Entrant(_Report):
    """One side of a match, or a tournament's winner: a player (public id) or a team (our id)."""

    player: PublicId | None = None
    team: RecordId | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Entrant:
        if (self.player is None) == (self.team is None):
            raise ValueError("give exactly one of player (a public id) or team (a team id)")
        return self


class PlacementReport(Entrant):
    place: Annotated[int, Field(ge=1, le=100_000)]


class MatchReport(_Report):
    """A decided match as the platform reports it."""

    match_ref: Reference
    tournament_ref: Reference
    round: Round
    side_a: Entrant
    side_b: Entrant
    state: Literal["completed", "forfeit"]
    winner: Literal["a", "b"]
    completed_at: AwareDatetime
    is_final: bool = False


class TournamentReport(_Report):
    """A tournament's outcome as the platform reports it."""

    tournament_ref: Reference
    winner: Entrant
    decided_at: AwareDatetime
    placements: Annotated[list[PlacementReport], Field(max_length=MAX_PLACEMENTS)] = []


class ReportStatus(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class ReportOutcome:
    """What a report did: the stored record's id, and the events it gave."""

    status: ReportStatus
    record_id: int
    created: bool
    events: BatchOutcome

    def as_json(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "id": self.record_id,
            "created": self.created,
            "events": {
                "recorded": len(self.events.recorded),
                "duplicate": len(self.events.duplicates),
                "conflict": len(self.events.conflicts),
            },
        }


def _status(created: bool, events: BatchOutcome) -> ReportStatus:
    return ReportStatus.RECORDED if created or events.recorded else ReportStatus.DUPLICATE


def report_match(session: Session, report: MatchReport) -> ReportOutcome:
    """Store a reported match (creating it on its first report) and record its events.

    :raise InvalidReport: naming the field at fault; nothing is written.
    :raise Conflict: if the match is stored with other sides, or already decided otherwise.
    """
    tournament = _tournament(session, report.tournament_ref)
    entrants = _resolve(session, {"side_a": report.side_a, "side_b": report.side_b})
    if entrants["side_a"] == entrants["side_b"]:
        raise InvalidReport("side_b", "a match is played between two different sides")
    for side in ("side_a", "side_b"):
        _check_kind(tournament, side, entrants[side])
    _check_members(session, entrants, report.completed_at)

    (a_player, a_team), (b_player, b_team) = entrants["side_a"], entrants["side_b"]
    now = utcnow()
    match_id = session.execute(
        dialect_insert(session, Match.__table__)
        .values(
            tournament_id=tournament.id,
            round=report.round,
            side_a_player_id=a_player,
            side_a_team_id=a_team,
            side_b_player_id=b_player,
            side_b_team_id=b_team,
            state=report.state,
            winner_side=report.winner,
            scheduled_at=report.completed_at,
            completed_at=report.completed_at,
            is_final=report.is_final,
            external_ref=report.match_ref,
            version=1,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["external_ref"])
        .returning(Match.__table__.c.id)
    ).scalar()
    created = match_id is not None
    if not created:
        match_id = _settle_with_stored_match(session, report, tournament, entrants)
    events = record_match_result(session, match_id)
    return ReportOutcome(_status(created, events), match_id, created, events)


def _settle_with_stored_match(
    session: Session,
    report: MatchReport,
    tournament: Tournament,
    entrants: dict[str, tuple[int | None, int | None]],
) -> int:
    """Compare a report with the match already stored under its reference; return the match id."""
    match = session.scalars(select(Match).where(Match.external_ref == report.match_ref)).one()
    where = f"match {report.match_ref!r}"
    stored_sides = {"side_a": match.side_entrant("a"), "side_b": match.side_entrant("b")}
    if match.tournament_id != tournament.id:
        raise Conflict(f"{where} is stored in another tournament")
    if stored_sides != entrants:
        raise Conflict(f"{where} is stored with other sides")
    if match.state in DECIDED_STATES:
        reported = {
            "round": report.round,
            "state": report.state,
            "winner": report.winner,
            "completed_at": report.completed_at,
            "is_final": report.is_final,
        }
        stored = {
            "round": match.round,
            "state": match.state,
            "winner": match.winner_side,
            "completed_at": match.completed_at,
            "is_final": match.is_final,
        }
        differing = [name for name in reported if reported[name] != stored[name]]
        if differing:
            raise Conflict(
                f"{where} was already decided with a different {', '.join(differing)}; "
                "decided results are corrected through a dispute, not by reporting them again"
            )
        return match.id
    if match.state != "scheduled":
        raise Conflict(f"{where} is {match.state}: its result cannot be reported")
    match.round = report.round
    match.state = report.state
    match.winner_side = report.winner
    match.completed_at = report.completed_at
    match.is_final = report.is_final
    session.flush()
    return match.id


def report_tournament_result(session: Session, report: TournamentReport) -> ReportOutcome:
    """Store a reported tournament result with its placements and record its events.

    :raise InvalidReport: naming the field at fault; nothing is written.
    :raise Conflict: if the tournament already has a different result.
    """
    tournament = _tournament(session, report.tournament_ref)
    if not tournament.awards_winner:
        raise InvalidReport(
            "tournament_ref", "this tournament is a team competition that nobody wins"
        )
    refs: dict[str, Entrant] = {"winner": report.winner}
    refs.update((f"placements.{i}", placement) for i, placement in enumerate(report.placements))
    entrants = _resolve(session, refs)
    for path in refs:
        _check_kind(tournament, path, entrants[path])
    placements = _checked_placements(report, entrants)
    _check_members(session, {"winner": entrants["winner"]}, report.decided_at)

    winner_player, winner_team = entrants["winner"]
    result_id = session.execute(
        dialect_insert(session, TournamentResult.__table__)
        .values(
            tournament_id=tournament.id,
            winner_player_id=winner_player,
            winner_team_id=winner_team,
            decided_at=report.decided_at,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["tournament_id"])
        .returning(TournamentResult.__table__.c.id)
    ).scalar()
    created = result_id is not None
    if created:
        session.add_all(
            Placement(result_id=result_id, place=place, player_id=player_id, team_id=team_id)
            for place, player_id, team_id in placements
        )
        session.flush()
    else:
        result_id = _settle_with_stored_result(
            session, report, tournament, entrants["winner"], placements
        )
    events = record_tournament_result(session, tournament.id)
    return ReportOutcome(_status(created, events), result_id, created, events)


def _checked_placements(
    report: TournamentReport, entrants: dict[str, tuple[int | None, int | None]]
) -> list[tuple[int, Any, Any]]:
    seen: dict[tuple[int | None, int | None], int] = {}
    placements = []
    for i, placement in enumerate(report.placements):
        path = f"placements.{i}"
        entrant = entrants[path]
        if entrant in seen:
            raise InvalidReport(
                path, f"this entrant is already placed by placements.{seen[entrant]}"
            )
        seen[entrant] = i
        is_winner = entrant == entrants["winner"]
        if placement.place == 1 and not is_winner:
            raise InvalidReport(f"{path}.place", "only the winner places first")
        if is_winner and placement.place != 1:
            raise InvalidReport(f"{path}.place", "the winner places first")
        placements.append((placement.place, *entrant))
    return sorted(placements, key=lambda p: (p[0], p[1] or 0, p[2] or 0))


def _settle_with_stored_result(
    session: Session,
    report: TournamentReport,
    tournament: Tournament,
    winner: tuple[int | None, int | None],
    placements: list[tuple[int, Any, Any]],
) -> int:
    """Compare a report with the tournament's stored result; return the result id."""
    result = session.scalars(
        select(TournamentResult).where(TournamentResult.tournament_id == tournament.id)
    ).one()
    stored_placements = sorted(
        session.execute(
            select(Placement.place, Placement.player_id, Placement.team_id).where(
                Placement.result_id == result.id
            )
        ).all(),
        key=lambda p: (p[0], p[1] or 0, p[2] or 0),
    )
    differing = [
        name
        for name, same in (
            ("winner", (result.winner_player_id, result.winner_team_id) == winner),
            ("decided_at", result.decided_at == report.decided_at),
            ("placements", stored_placements == placements),
        )
        if not same
    ]
    if differing:
        raise Conflict(
            f"tournament {report.tournament_ref!r} already has a result with a different "
            f"{', '.join(differing)}; results are corrected through a dispute, not by reporting "
            "them again"
        )
    return result.id


def _tournament(session: Session, reference: str) -> Tournament:
    tournament = session.scalars(
        select(Tournament).where(Tournament.external_ref == reference)
    ).first()
    if tournament is None:
        raise InvalidReport("tournament_ref", "no tournament is stored with this reference")
    return tournament


def _resolve(
    session: Session, refs: dict[str, Entrant]
) -> dict[str, tuple[int | None, int | None]]:
    """Return ``(player_id, team_id)`` for each entrant, by path; one query per kind."""
    public_ids = sorted({e.player for e in refs.values() if e.player is not None})
    team_ids = sorted({e.team for e in refs.values() if e.team is not None})
    players = (
        dict(
            session.execute(
                select(Player.public_id, Player.id).where(Player.public_id.in_(public_ids))
            ).all()
        )
        if public_ids
        else {}
    )
    teams = (
        set(session.scalars(select(Team.id).where(Team.id.in_(team_ids)))) if team_ids else set()
    )
    resolved = {}
    for path, entrant in refs.items():
        if entrant.player is not None:
            if entrant.player not in players:
                raise InvalidReport(f"{path}.player", "no player has this public id")
            resolved[path] = (players[entrant.player], None)
        else:
            if entrant.team not in teams:
                raise InvalidReport(f"{path}.team", "no team has this id")
            resolved[path] = (None, entrant.team)
    return resolved


def _check_kind(tournament: Tournament, path: str, entrant: tuple[int | None, int | None]) -> None:
    is_team = entrant[1] is not None
    if tournament.is_team_based and not is_team:
        raise InvalidReport(
            f"{path}.player", "this tournament is played by teams, not single players"
        )
    if not tournament.is_team_based and is_team:
        raise InvalidReport(
            f"{path}.team", "this tournament is played by single players, not teams"
        )


def _check_members(
    session: Session, entrants: dict[str, tuple[int | None, int | None]], at: datetime
) -> None:
    """Refuse a team that had nobody in it when the result was decided."""
    teams = {path: team_id for path, (_, team_id) in entrants.items() if team_id is not None}
    if not teams:
        return
    roster = TeamRoster.load(session, teams.values())
    for path, team_id in teams.items():
        if not roster.members(team_id, at):
            raise InvalidReport(f"{path}.team", f"the team had no members at {at.isoformat()}")
