"""Disputes: reports, case files and resolutions of contested matches.

A match is disputed by a report, from the platform or from staff; further
reports join the open case. Staff add evidence notes, and every opening of the
case file is recorded. A resolution picks the corrected winner side, or voids
the match, with a reason.

A resolution never edits an event. It reverses whatever outcome is currently
effective for the match (the original events, minus those already reversed,
plus the events of earlier resolutions) and records the corrected outcome as
new events sourced from the resolution row, so every resolution's events are
distinct under the idempotency key and a match can be resolved again later.
When the match is the final of a tournament that awards a winner, the
tournament's win follows in the same way, and so does its result: a void final
leaves the result void, naming nobody, until the final is resolved to a winner.

Resolving is plan, preview, apply: ``plan_resolution`` works out every event
and every stat change without writing; the preview shows that plan; and
``resolve_dispute`` builds the same plan again inside its transaction, stores
it with the resolution and records exactly its events. Staff confirm a plan
based on the match version they saw: if the match changed since, the
resolution is refused (``MatchChanged``), and a double submit of one form
(same token) returns the stored resolution and writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session, aliased

from webapp.domain.audit import Actor, record_audit
from webapp.domain.errors import Conflict, Invalid, NotFound
from webapp.domain.projection import counted_stat_deltas
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.results import TeamRoster, match_events
from webapp.models.activity import ActivityEvent
from webapp.models.archive import ArchivedEventKey
from webapp.models.base import utcnow
from webapp.models.competitions import Match, Placement, Tournament, TournamentResult
from webapp.models.disputes import (
    OUTCOMES,
    Dispute,
    DisputeNote,
    DisputeReport,
    DisputeView,
    MatchResolution,
)
from webapp.models.players import Player, Team
from webapp.models.stats import SCOPES, STAT_NAMES, PlayerStats

RESOLUTION_SOURCE = "match_resolution"
MATCH_OUTCOME_TYPES = ("match_won", "match_lost", "match_forfeit_won", "match_forfeit_lost")
# States a match can be disputed in: it has been played (or voided by an earlier resolution).
DISPUTABLE_STATES = ("completed", "forfeit", "void", "disputed")
REASON_MAX = 2_000
NOTE_MAX = 5_000
REPORTER_MAX = 100


class MatchChanged(Conflict):
    """The match changed since the resolution was prepared; nothing was written."""


# Reports, notes and views.


@dataclass(frozen=True)
class ReportOutcome:
    """A report stored, on a case opened by it (``opened``) or already open."""

    dispute: Dispute
    report: DisputeReport
    opened: bool


def report_dispute(session: Session, actor: Actor, match_id: int, reason: str, *,
                   reporter: str | None = None, source: str = "platform") -> ReportOutcome:
    """Report a match result as wrong: open its case (marking it disputed) or join the open one.

    :raise NotFound: the match does not exist.
    :raise Invalid: no reason, or the match has not been played.
    """
    reason = _required_text(reason, "reason", REASON_MAX)
    if reporter is not None:
        reporter = reporter.strip() or None
        if reporter is not None and len(reporter) > REPORTER_MAX:
            raise Invalid(f"reporter: at most {REPORTER_MAX} characters")
    if source not in ("platform", "staff"):
        raise Invalid(f"source: unknown {source!r}")
    match = _locked_match(session, match_id)
    dispute = open_dispute_of(session, match.id)
    opened = dispute is None
    if opened:
        if match.state not in DISPUTABLE_STATES:
            raise Invalid(f"match {match.id} is {match.state}: only a played match can be disputed")
        dispute = Dispute(match_id=match.id, status="open", opened_at=utcnow(),
                          match_state_before=match.state, winner_side_before=match.winner_side)
        session.add(dispute)
        match.state = "disputed"
    session.flush()
    report = DisputeReport(dispute_id=dispute.id, reported_at=utcnow(), source=source, reporter=reporter,
                           reporter_staff_id=actor.staff_id if source == "staff" else None, reason=reason)
    session.add(report)
    session.flush()
    record_audit(session, actor, "dispute.reported", target_type="match", target_id=match.id,
                 dispute_id=dispute.id, report_id=report.id, source=source, opened=opened)
    return ReportOutcome(dispute, report, opened)


class PlatformReport(BaseModel):
    """A dispute as the platform reports it: who (its name for them) and why."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    reporter: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                               max_length=REPORTER_MAX)]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=REASON_MAX)]


def match_by_reference(session: Session, reference: str) -> Match:
    """Return the match the platform calls ``reference`` (its match_ref), or by our id if all digits.

    :raise NotFound: no such match.
    """
    match = session.scalars(select(Match).where(Match.external_ref == reference)).first()
    if match is None and reference.isdigit():
        match = session.get(Match, int(reference))
    if match is None:
        raise NotFound(f"match {reference!r} does not exist")
    return match


def add_note(session: Session, actor: Actor, dispute_id: int, body: str) -> DisputeNote:
    """Add an evidence note to a case file."""
    dispute = _dispute(session, dispute_id)
    note = DisputeNote(dispute_id=dispute.id, staff_id=actor.staff_id, created_at=utcnow(),
                       body=_required_text(body, "note", NOTE_MAX))
    session.add(note)
    session.flush()
    record_audit(session, actor, "dispute.note_added", target_type="dispute", target_id=dispute.id,
                 note_id=note.id)
    return note


def record_case_view(session: Session, actor: Actor, dispute_id: int) -> DisputeView:
    """Record that a staff member opened a case file (it shows players' unredacted data)."""
    dispute = _dispute(session, dispute_id)
    view = DisputeView(dispute_id=dispute.id, staff_id=actor.staff_id, viewed_at=utcnow())
    session.add(view)
    session.flush()
    record_audit(session, actor, "dispute.viewed", target_type="dispute", target_id=dispute.id,
                 match_id=dispute.match_id)
    return view


def open_dispute_of(session: Session, match_id: int) -> Dispute | None:
    """Return the open case of a match, if any."""
    return session.scalars(
        select(Dispute).where(Dispute.match_id == match_id, Dispute.status == "open")
    ).first()


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


# Planning a resolution.


@dataclass(frozen=True)
class PlannedEvent:
    """An event a resolution will record; its source is the resolution, not known until stored."""

    player_id: int
    event_type: str
    occurred_at: datetime
    team_id: int | None
    tournament_id: int | None
    is_private: bool
    metadata: dict[str, Any]
    reverses_event_id: int | None = None

    def as_new_event(self, resolution_id: int) -> NewEvent:
        return NewEvent(
            player_id=self.player_id,
            event_type=self.event_type,
            occurred_at=self.occurred_at,
            source_model=RESOLUTION_SOURCE,
            source_id=resolution_id,
            origin="dispute",
            origin_id=resolution_id,
            team_id=self.team_id,
            tournament_id=self.tournament_id,
            is_private=self.is_private,
            metadata=self.metadata,
            reverses_event_id=self.reverses_event_id,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "player_id": self.player_id,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat(),
            "team_id": self.team_id,
            "tournament_id": self.tournament_id,
            "is_private": self.is_private,
            "metadata": dict(self.metadata),
            "reverses_event_id": self.reverses_event_id,
        }


@dataclass(frozen=True)
class StatChange:
    player_id: int
    scope: str
    stat: str
    before: int
    after: int


@dataclass(frozen=True)
class ResolutionPlan:
    """Everything a resolution will write, worked out without writing anything."""

    match_id: int
    dispute_id: int
    based_on_version: int
    outcome: str
    state_before: str
    winner_side_before: str | None
    state_after: str
    winner_side_after: str | None
    reversals: list[PlannedEvent]
    new_events: list[PlannedEvent]
    # (player_id, scope) -> every stat before; changes are the stats that move.
    stats_before: dict[tuple[int, str], dict[str, int]]
    stat_changes: list[StatChange]
    tournament_result_id: int | None = None
    tournament_winner_before: tuple[int | None, int | None] | None = None
    tournament_winner_after: tuple[int | None, int | None] | None = None

    @property
    def events(self) -> list[PlannedEvent]:
        return [*self.reversals, *self.new_events]

    @property
    def player_ids(self) -> list[int]:
        return sorted({player_id for player_id, _scope in self.stats_before})

    def stats_after(self) -> dict[tuple[int, str], dict[str, int]]:
        after = {key: dict(values) for key, values in self.stats_before.items()}
        for change in self.stat_changes:
            after[(change.player_id, change.scope)][change.stat] = change.after
        return after

    def as_json(self) -> dict[str, Any]:
        """The preview as stored with the resolution."""
        return {
            "match_id": self.match_id,
            "based_on_version": self.based_on_version,
            "outcome": self.outcome,
            "state_before": self.state_before,
            "winner_side_before": self.winner_side_before,
            "state_after": self.state_after,
            "winner_side_after": self.winner_side_after,
            "reversals": [e.as_json() for e in self.reversals],
            "new_events": [e.as_json() for e in self.new_events],
            "stat_changes": [
                {"player_id": c.player_id, "scope": c.scope, "stat": c.stat, "before": c.before,
                 "after": c.after}
                for c in self.stat_changes
            ],
            "tournament_result_id": self.tournament_result_id,
            "tournament_winner_before": _entrant_json(self.tournament_winner_before),
            "tournament_winner_after": _entrant_json(self.tournament_winner_after),
        }


def plan_resolution(session: Session, match_id: int, outcome: str, *,
                    expected_version: int | None = None) -> ResolutionPlan:
    """Work out what resolving a disputed match as ``outcome`` ('a', 'b' or 'void') would write.

    :raise NotFound: the match does not exist.
    :raise Invalid: unknown outcome, or the match is not disputed.
    :raise MatchChanged: the match is no longer at ``expected_version``.
    """
    if outcome not in OUTCOMES:
        raise Invalid(f"outcome: must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    match = session.get(Match, _match_id(match_id))
    if match is None:
        raise NotFound(f"match {match_id} does not exist")
    return _plan(session, match, outcome, expected_version)


def _plan(session: Session, match: Match, outcome: str, expected_version: int | None) -> ResolutionPlan:
    if expected_version is not None and match.version != expected_version:
        raise MatchChanged(
            f"match {match.id} has changed since you opened it (version {expected_version}, now "
            f"{match.version}); review it again before resolving"
        )
    dispute = open_dispute_of(session, match.id)
    if dispute is None:
        raise Invalid(f"match {match.id} is {match.state} with no open dispute: report it first")
    tournament = session.get(Tournament, match.tournament_id)

    if outcome == "void":
        state_after, winner_after = "void", None
    else:
        state_after = "forfeit" if _first_state(session, match) == "forfeit" else "completed"
        winner_after = outcome

    _refuse_if_archived(session, match, tournament)
    effective = _effective_outcome_events(session, match)
    team_ids = [t for t in (match.side_a_team_id, match.side_b_team_id) if t is not None]
    final = _final_result(session, match, tournament)
    if final is not None and final.winner_team_id is not None:
        team_ids.append(final.winner_team_id)
    roster = TeamRoster.load(session, team_ids)

    target: list[PlannedEvent] = []
    if winner_after is not None:
        corrected = Match(
            id=match.id, tournament_id=match.tournament_id, round=match.round, state=state_after,
            winner_side=winner_after, scheduled_at=match.scheduled_at, completed_at=match.completed_at,
            side_a_player_id=match.side_a_player_id, side_a_team_id=match.side_a_team_id,
            side_b_player_id=match.side_b_player_id, side_b_team_id=match.side_b_team_id,
        )
        target = [
            PlannedEvent(e.player_id, e.event_type, e.occurred_at, e.team_id, e.tournament_id,
                         bool(tournament.is_private), dict(e.metadata))
            for e in match_events(corrected, roster)
        ]
    reversals, new_events = _replace(effective, target, {"match_id": match.id})

    winner_before = winner_after_entrant = None
    if final is not None:
        winner_before = None if final.is_void else (final.winner_player_id, final.winner_team_id)
        winner_after_entrant = match.side_entrant(winner_after) if winner_after else None
        won = _effective_tournament_wins(session, tournament.id)
        wins: list[PlannedEvent] = []
        if winner_after_entrant is not None:
            player_id, team_id = winner_after_entrant
            wins = [
                PlannedEvent(p, "tournament_won", final.decided_at, team_id, tournament.id,
                             bool(tournament.is_private), {"is_team_win": team_id is not None})
                for p in roster.entrant_players(player_id, team_id, final.decided_at)
            ]
        won_reversals, won_new = _replace(won, wins, {"tournament_id": tournament.id})
        reversals += won_reversals
        new_events += won_new

    stats_before, changes = _stat_changes(session, [*reversals, *new_events], _side_players(match, roster))
    return ResolutionPlan(
        match_id=match.id,
        dispute_id=dispute.id,
        based_on_version=match.version,
        outcome=outcome,
        state_before=dispute.match_state_before,
        winner_side_before=dispute.winner_side_before,
        state_after=state_after,
        winner_side_after=winner_after,
        reversals=reversals,
        new_events=new_events,
        stats_before=stats_before,
        stat_changes=changes,
        tournament_result_id=final.id if final is not None else None,
        tournament_winner_before=winner_before,
        tournament_winner_after=winner_after_entrant,
    )


def _replace(effective: Sequence[ActivityEvent], target: Sequence[PlannedEvent],
             reversal_metadata: dict[str, int]) -> tuple[list[PlannedEvent], list[PlannedEvent]]:
    """Return the reversals and new events that turn ``effective`` into ``target``.

    When what is effective already is the target (a resolution upholding the
    current result), nothing is written: reversing and re-recording the same
    outcome would only churn the history.
    """
    def shape(player_id: int, event_type: str, team_id: int | None) -> tuple:
        return (player_id, event_type, team_id)

    if sorted(shape(e.player_id, e.event_type, e.team_id) for e in effective) == sorted(
        shape(e.player_id, e.event_type, e.team_id) for e in target
    ):
        return [], []
    reversals = [
        PlannedEvent(e.player_id, f"{e.event_type}_reversed", e.occurred_at, e.team_id, e.tournament_id,
                     bool(e.is_private), dict(reversal_metadata), reverses_event_id=e.id)
        for e in sorted(effective, key=lambda e: (e.event_type, e.player_id, e.id))
    ]
    return reversals, sorted(target, key=lambda e: (e.event_type, e.player_id))


def _stat_changes(session: Session, events: Sequence[PlannedEvent], side_players: Iterable[int]
                  ) -> tuple[dict[tuple[int, str], dict[str, int]], list[StatChange]]:
    """Return every involved player's stats now, and the changes ``events`` will make to them.

    The deltas come from the projection, the same function recording applies.
    """
    deltas = counted_stat_deltas(
        Counter((e.player_id, e.event_type, e.team_id is not None, e.is_private) for e in events)
    )
    player_ids = sorted({*side_players, *(e.player_id for e in events)})
    before = {(p, scope): dict.fromkeys(STAT_NAMES, 0) for p in player_ids for scope in SCOPES}
    if player_ids:
        for row in session.scalars(select(PlayerStats).where(PlayerStats.player_id.in_(player_ids))):
            before[(row.player_id, row.scope)] = row.as_dict()
    changes = [
        StatChange(player_id, scope, stat, before[(player_id, scope)][stat],
                   before[(player_id, scope)][stat] + delta)
        for (player_id, scope), row in sorted(deltas.items())
        for stat, delta in row.items()
        if delta
    ]
    return before, changes


def _refuse_if_archived(session: Session, match: Match, tournament: Tournament) -> None:
    """Refuse while any of the match's outcome events is in cold storage.

    A resolution reverses the events that are effective; one that left the hot
    table could not be reversed and its outcome would count twice. Open
    disputes hold their players' events hot, so only a match archived before
    it was disputed gets here.
    """
    resolutions = select(MatchResolution.id).where(MatchResolution.match_id == match.id)
    sources = [and_(ArchivedEventKey.source_model == "match", ArchivedEventKey.source_id == match.id),
               and_(ArchivedEventKey.source_model == RESOLUTION_SOURCE,
                    ArchivedEventKey.source_id.in_(resolutions))]
    final = _final_result(session, match, tournament)
    if final is not None:
        sources.append(and_(ArchivedEventKey.source_model == "tournament_result",
                            ArchivedEventKey.source_id == final.id))
    files = sorted(set(session.scalars(select(ArchivedEventKey.file_id).where(or_(*sources)))))
    if files:
        raise Conflict(
            f"match {match.id}: some of its events are archived in cold storage (archive file "
            f"{', '.join(map(str, files))}); restore them (flask archive restore FILE_ID) before resolving"
        )


def _first_state(session: Session, match: Match) -> str:
    """Return the state the match had when it was first disputed: whether it was a forfeit."""
    first = session.scalars(
        select(Dispute.match_state_before).where(Dispute.match_id == match.id).order_by(Dispute.id).limit(1)
    ).first()
    return first or match.state


def _final_result(session: Session, match: Match, tournament: Tournament) -> TournamentResult | None:
    if not match.is_final or not tournament.awards_winner:
        return None
    return session.scalars(
        select(TournamentResult).where(TournamentResult.tournament_id == tournament.id)
    ).first()


def _not_reversed():
    reversal = aliased(ActivityEvent)
    return ~exists(select(reversal.id).where(reversal.reverses_event_id == ActivityEvent.id))


def _effective_outcome_events(session: Session, match: Match) -> list[ActivityEvent]:
    """Return the match's outcome events that stand: not reversed, original or from a resolution."""
    resolutions = select(MatchResolution.id).where(MatchResolution.match_id == match.id)
    return list(
        session.scalars(
            select(ActivityEvent)
            .where(
                or_(
                    and_(ActivityEvent.source_model == "match", ActivityEvent.source_id == match.id),
                    and_(ActivityEvent.source_model == RESOLUTION_SOURCE,
                         ActivityEvent.source_id.in_(resolutions)),
                ),
                ActivityEvent.event_type.in_(MATCH_OUTCOME_TYPES),
                _not_reversed(),
            )
            .order_by(ActivityEvent.id)
        )
    )


def _effective_tournament_wins(session: Session, tournament_id: int) -> list[ActivityEvent]:
    return list(
        session.scalars(
            select(ActivityEvent)
            .where(
                ActivityEvent.tournament_id == tournament_id,
                ActivityEvent.event_type == "tournament_won",
                _not_reversed(),
            )
            .order_by(ActivityEvent.id)
        )
    )


def _side_players(match: Match, roster: TeamRoster) -> list[int]:
    at = match.completed_at or match.scheduled_at
    players: list[int] = []
    for side in ("a", "b"):
        player_id, team_id = match.side_entrant(side)
        players += [player_id] if team_id is None else roster.members(team_id, at)
    return players


# Applying a resolution.


@dataclass(frozen=True)
class ResolutionOutcome:
    """The stored resolution; ``replayed`` when the same submission had already stored it."""

    resolution: MatchResolution
    plan: ResolutionPlan | None
    event_ids: list[int] = field(default_factory=list)
    replayed: bool = False


def resolve_dispute(session: Session, actor: Actor, match_id: int, outcome: str, reason: str, *,
                    expected_version: int, token: str) -> ResolutionOutcome:
    """Resolve a disputed match as ``outcome`` and record the correction, in the caller's transaction.

    :param expected_version: the match version the staff member saw; a newer one refuses.
    :param token: the submission's key: repeating it returns the stored resolution, writing nothing.
    :raise NotFound: the match does not exist.
    :raise Invalid: no reason, unknown outcome, no token, or the match is not disputed.
    :raise MatchChanged: the match changed since ``expected_version``.
    """
    token = (token or "").strip()
    if not token or len(token) > 64:
        raise Invalid("token: a submission token of 1 to 64 characters is required")
    reason = _required_text(reason, "reason", REASON_MAX)
    if outcome not in OUTCOMES:
        raise Invalid(f"outcome: must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    if not isinstance(expected_version, int) or isinstance(expected_version, bool):
        raise Invalid("version: the match version the resolution is based on is required")
    # Locked first, so that of two staff resolving at once the second waits and then sees the new version.
    match = _locked_match(session, match_id)
    stored = session.scalars(select(MatchResolution).where(MatchResolution.token == token)).first()
    if stored is not None:
        if stored.match_id != match.id:
            raise Invalid("token: already used for another match")
        return ResolutionOutcome(stored, None, replayed=True)
    plan = _plan(session, match, outcome, expected_version)

    resolution = MatchResolution(
        match_id=match.id, dispute_id=plan.dispute_id, outcome=outcome, reason=reason,
        based_on_version=plan.based_on_version, token=token, resolved_by_staff_id=actor.staff_id,
        resolved_at=utcnow(), state_before=plan.state_before, winner_side_before=plan.winner_side_before,
        state_after=plan.state_after, winner_side_after=plan.winner_side_after,
        tournament_result_id=plan.tournament_result_id, preview=plan.as_json(),
        stats_before=_stats_json(plan.stats_before), stats_after={},
    )
    session.add(resolution)
    session.flush()

    recorded = record_events(session, [e.as_new_event(resolution.id) for e in plan.events])
    if len(recorded.recorded) != len(plan.events):
        # Only a concurrent writer could have stored one of this new resolution's keys.
        raise Conflict(f"match {match.id}: the correction's events were not all new; nothing was written")

    match.state = plan.state_after
    match.winner_side = plan.winner_side_after
    if plan.state_after != "void" and match.completed_at is None:
        match.completed_at = match.scheduled_at
    dispute = session.get(Dispute, plan.dispute_id)
    dispute.status = "resolved"
    dispute.closed_at = resolution.resolved_at
    if plan.tournament_result_id is not None:
        _move_tournament_win(session, plan)
    session.flush()

    resolution.stats_after = _stats_json(_current_stats(session, plan.player_ids))
    record_audit(
        session, actor, "dispute.resolved", target_type="match", target_id=match.id,
        dispute_id=dispute.id, resolution_id=resolution.id, outcome=outcome,
        based_on_version=plan.based_on_version, reversals=len(plan.reversals),
        new_events=len(plan.new_events),
    )
    session.flush()
    return ResolutionOutcome(resolution, plan, [o.event_id for o in recorded.outcomes])


def _move_tournament_win(session: Session, plan: ResolutionPlan) -> None:
    """Name the final's corrected winner, or nobody for a void final, on the result and its placements.

    Placements move by place, never by entrant: the new winner takes first
    place and whoever held it takes the new winner's old place. A void final
    puts the old winner second beside the other finalist (neither won), so
    resolving it again only has to lift the new winner back to first.
    """
    result = session.get(TournamentResult, plan.tournament_result_id)
    new = plan.tournament_winner_after
    if new is None:
        result.status = "void"
        result.winner_player_id = result.winner_team_id = None
    else:
        result.status = "decided"
        result.winner_player_id, result.winner_team_id = new
    placements = list(session.scalars(select(Placement).where(Placement.result_id == result.id)))
    first = next((p for p in placements if p.place == 1), None)
    if new is None:
        if first is not None:
            first.place = 2
        return
    runner = next((p for p in placements if (p.player_id, p.team_id) == new), None)
    if runner is None:
        if first is not None:
            first.player_id, first.team_id = new
    elif runner is not first:
        if first is not None:
            first.place = runner.place
        runner.place = 1


def _stats_json(stats: dict[tuple[int, str], dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (player_id, scope), values in sorted(stats.items()):
        out.setdefault(str(player_id), {})[scope] = dict(values)
    return out


def _current_stats(session: Session, player_ids: Sequence[int]) -> dict[tuple[int, str], dict[str, int]]:
    stats = {(p, scope): dict.fromkeys(STAT_NAMES, 0) for p in player_ids for scope in SCOPES}
    if player_ids:
        for row in session.scalars(
            select(PlayerStats).where(PlayerStats.player_id.in_(player_ids)).execution_options(
                populate_existing=True
            )
        ):
            stats[(row.player_id, row.scope)] = row.as_dict()
    return stats


# Reading: the queue, the match page and the case file.


@dataclass(frozen=True)
class QueueItem:
    dispute: Dispute
    match: Match
    tournament: Tournament
    reports: list[DisputeReport]


def dispute_queue(session: Session, *, status: str = "open", limit: int = 200) -> list[QueueItem]:
    """Return cases, oldest first, each with its match and its reports."""
    if status not in ("open", "resolved"):
        raise Invalid(f"status: unknown {status!r}")
    order = Dispute.opened_at.asc() if status == "open" else Dispute.closed_at.desc()
    rows = session.execute(
        select(Dispute, Match, Tournament)
        .join(Match, Match.id == Dispute.match_id)
        .join(Tournament, Tournament.id == Match.tournament_id)
        .where(Dispute.status == status)
        .order_by(order, Dispute.id)
        .limit(limit)
    ).all()
    reports: dict[int, list[DisputeReport]] = {}
    ids = [dispute.id for dispute, _m, _t in rows]
    if ids:
        for report in session.scalars(
            select(DisputeReport).where(DisputeReport.dispute_id.in_(ids)).order_by(DisputeReport.id)
        ):
            reports.setdefault(report.dispute_id, []).append(report)
    return [QueueItem(d, m, t, reports.get(d.id, [])) for d, m, t in rows]


@dataclass(frozen=True)
class Side:
    side: str
    player: Player | None
    team: Team | None
    members: list[Player]

    @property
    def name(self) -> str:
        if self.team is not None:
            return self.team.name
        return self.player.username if self.player is not None else "?"


@dataclass(frozen=True)
class MatchRecord:
    """A match as trust and safety see it: both sides, every member, every event it gave."""

    match: Match
    tournament: Tournament
    sides: list[Side]
    events: list[ActivityEvent]
    players: dict[int, Player]
    disputes: list[Dispute]
    resolutions: list[MatchResolution]
    open_dispute: Dispute | None

    @property
    def reversed_by(self) -> dict[int, int]:
        """Event id -> the id of the event that reversed it."""
        return {e.reverses_event_id: e.id for e in self.events if e.reverses_event_id is not None}


def match_record(session: Session, match_id: int) -> MatchRecord:
    """Return a match with both sides, their members and the events each player got from it."""
    match = session.get(Match, _match_id(match_id))
    if match is None:
        raise NotFound(f"match {match_id} does not exist")
    tournament = session.get(Tournament, match.tournament_id)
    roster = TeamRoster.load(session, [t for t in (match.side_a_team_id, match.side_b_team_id) if t])
    at = match.completed_at or match.scheduled_at
    resolutions = list(session.scalars(
        select(MatchResolution).where(MatchResolution.match_id == match.id).order_by(MatchResolution.id)
    ))
    resolution_ids = [r.id for r in resolutions]
    conditions = [and_(ActivityEvent.source_model == "match", ActivityEvent.source_id == match.id)]
    if resolution_ids:
        conditions.append(and_(ActivityEvent.source_model == RESOLUTION_SOURCE,
                               ActivityEvent.source_id.in_(resolution_ids)))
    events = list(session.scalars(
        select(ActivityEvent).where(or_(*conditions)).order_by(ActivityEvent.id)
    ))
    # Tournament wins a resolution reversed were sourced from the tournament result: shown too.
    reversed_ids = {e.reverses_event_id for e in events if e.reverses_event_id} - {e.id for e in events}
    if reversed_ids:
        events += session.scalars(select(ActivityEvent).where(ActivityEvent.id.in_(reversed_ids)))
        events.sort(key=lambda e: e.id)
    member_ids: dict[str, list[int]] = {}
    for side in ("a", "b"):
        player_id, team_id = match.side_entrant(side)
        member_ids[side] = [player_id] if team_id is None else roster.members(team_id, at)
    wanted = {p for ids in member_ids.values() for p in ids} | {e.player_id for e in events}
    players = {p.id: p for p in session.scalars(select(Player).where(Player.id.in_(wanted)))} if wanted else {}
    sides = []
    for side in ("a", "b"):
        player_id, team_id = match.side_entrant(side)
        sides.append(Side(
            side=side,
            player=players.get(player_id) if player_id is not None else None,
            team=session.get(Team, team_id) if team_id is not None else None,
            members=[players[p] for p in member_ids[side] if p in players],
        ))
    disputes = list(session.scalars(
        select(Dispute).where(Dispute.match_id == match.id).order_by(Dispute.id)
    ))
    return MatchRecord(match, tournament, sides, events, players, disputes, resolutions,
                       next((d for d in disputes if d.status == "open"), None))


@dataclass(frozen=True)
class CaseFile:
    """Everything about one dispute on one page."""

    dispute: Dispute
    record: MatchRecord
    reports: list[DisputeReport]
    notes: list[DisputeNote]
    views: list[DisputeView]
    resolution: MatchResolution | None
    resolution_events: list[ActivityEvent]
    staff_names: dict[int, str]


def case_file(session: Session, dispute_id: int) -> CaseFile:
    """Return a dispute's case file: reports, notes, viewers, resolution, its events and stats."""
    from webapp.models.staff import StaffUser

    dispute = _dispute(session, dispute_id)
    record = match_record(session, dispute.match_id)
    reports = list(session.scalars(
        select(DisputeReport).where(DisputeReport.dispute_id == dispute.id).order_by(DisputeReport.id)
    ))
    notes = list(session.scalars(
        select(DisputeNote).where(DisputeNote.dispute_id == dispute.id).order_by(DisputeNote.id)
    ))
    views = list(session.scalars(
        select(DisputeView).where(DisputeView.dispute_id == dispute.id).order_by(DisputeView.id.desc())
    ))
    resolution = next((r for r in record.resolutions if r.dispute_id == dispute.id), None)
    resolution_events = [] if resolution is None else [
        e for e in record.events if e.source_model == RESOLUTION_SOURCE and e.source_id == resolution.id
    ]
    staff_ids = {r.reporter_staff_id for r in reports} | {n.staff_id for n in notes} | {
        v.staff_id for v in views} | ({resolution.resolved_by_staff_id} if resolution else set())
    staff_ids.discard(None)
    staff_names = {s.id: s.email for s in session.scalars(
        select(StaffUser).where(StaffUser.id.in_(staff_ids)))} if staff_ids else {}
    return CaseFile(dispute, record, reports, notes, views, resolution, resolution_events, staff_names)


# Helpers.


def _required_text(value: Any, name: str, limit: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise Invalid(f"{name}: required")
    if len(text) > limit:
        raise Invalid(f"{name}: at most {limit} characters")
    return text


def _match_id(match_id: Any) -> int:
    try:
        return int(match_id)
    except (TypeError, ValueError):
        raise NotFound(f"match {match_id!r} does not exist") from None


def _locked_match(session: Session, match_id: Any) -> Match:
    match = session.get(Match, _match_id(match_id), with_for_update=True, populate_existing=True)
    if match is None:
        raise NotFound(f"match {match_id} does not exist")
    return match


def _dispute(session: Session, dispute_id: Any) -> Dispute:
    try:
        dispute = session.get(Dispute, int(dispute_id))
    except (TypeError, ValueError):
        dispute = None
    if dispute is None:
        raise NotFound(f"dispute {dispute_id} does not exist")
    return dispute


def _entrant_json(entrant: tuple[int | None, int | None] | None) -> dict[str, int | None] | None:
    if entrant is None:
        return None
    return {"player_id": entrant[0], "team_id": entrant[1]}
