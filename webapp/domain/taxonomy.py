"""The event taxonomy: every event type, its metadata schema and its stat deltas.

This table is the only place that says how an event changes a player's stats.
Live recording, backfill, dispute reversals and reconciliation all read it.
See ``docs/taxonomy.md`` for the same table in prose.

Stat deltas of tournament wins depend on whether the win was a team's:
``team_id`` set on the event selects ``team_deltas``, otherwise ``solo_deltas``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from webapp.domain.errors import Invalid
from webapp.models.stats import STAT_NAMES


class _Metadata(BaseModel):
    # Strict and closed: ids must be integers, and no unknown (possibly free-text,
    # possibly personal) field can slip into the immutable history.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MatchOutcomeMetadata(_Metadata):
    """Metadata of an event derived from a match."""

    round: str
    side: str
    opponent_player_ids: list[int]
    opponent_team_id: int | None = None


class TournamentMetadata(_Metadata):
    """Metadata of registration, check-in and completion events."""

    registration_id: int | None = None


class TournamentWinMetadata(_Metadata):
    """Metadata of a tournament win."""

    is_team_win: bool
    placement: int = 1


class ReversalMetadata(_Metadata):
    """Metadata of a reversal: which match or tournament it corrects."""

    match_id: int | None = None
    tournament_id: int | None = None


@cache
def _defaults_of(model: type[_Metadata]) -> Mapping[str, Any]:
    return MappingProxyType(
        {name: field.default for name, field in model.model_fields.items() if not field.is_required()}
    )


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    metadata_model: type[_Metadata]
    deltas: Mapping[str, int] = field(default_factory=dict)
    solo_deltas: Mapping[str, int] = field(default_factory=dict)
    team_deltas: Mapping[str, int] = field(default_factory=dict)
    # For a reversal, the event type it undoes.
    reverses: str | None = None

    def deltas_for(self, is_team: bool) -> dict[str, int]:
        """Return the stat deltas of one event of this type."""
        combined = dict(self.deltas)
        for stat, delta in (self.team_deltas if is_team else self.solo_deltas).items():
            combined[stat] = combined.get(stat, 0) + delta
        return combined

    def validate_metadata(self, metadata: Any) -> dict[str, Any]:
        """Return ``metadata`` checked and normalised, or raise ``Invalid`` naming the field.

        Normalised means as ``model_dump(exclude_defaults=True)`` would give it:
        fields left at their default are not stored.
        """
        if type(metadata) is not dict:
            if not isinstance(metadata, Mapping):
                raise Invalid(f"{self.name}: metadata must be an object, not {type(metadata).__name__}")
            metadata = dict(metadata)
        try:
            model = self.metadata_model.__pydantic_validator__.validate_python(metadata)
        except ValidationError as exc:
            problems = "; ".join(
                f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}"
                for err in exc.errors()
            )
            raise Invalid(f"{self.name} metadata: {problems}") from None
        # Every event is validated, live and in backfills of millions: reading the
        # validated fields directly costs a third of what model_dump does.
        defaults = _defaults_of(self.metadata_model)
        return {
            name: value
            for name, value in model.__dict__.items()
            if name not in defaults or value != defaults[name]
        }


def _reversal_of(original: EventType) -> EventType:
    """Build the reversal of ``original``: every delta negated, so it undoes exactly."""

    def negate(deltas: Mapping[str, int]) -> Mapping[str, int]:
        return MappingProxyType({stat: -delta for stat, delta in deltas.items()})

    return EventType(
        name=f"{original.name}_reversed",
        description=f"Undoes an earlier {original.name} after a dispute was resolved.",
        metadata_model=ReversalMetadata,
        deltas=negate(original.deltas),
        solo_deltas=negate(original.solo_deltas),
        team_deltas=negate(original.team_deltas),
        reverses=original.name,
    )


def _frozen(**deltas: int) -> Mapping[str, int]:
    return MappingProxyType(deltas)


MATCH_WON = EventType(
    "match_won",
    "Won a completed match.",
    MatchOutcomeMetadata,
    _frozen(matches_played=1, matches_won=1),
)
MATCH_LOST = EventType(
    "match_lost",
    "Lost a completed match.",
    MatchOutcomeMetadata,
    _frozen(matches_played=1, matches_lost=1),
)
MATCH_FORFEIT_WON = EventType(
    "match_forfeit_won",
    "The opponent forfeited; counted apart from wins, never as a match won or played.",
    MatchOutcomeMetadata,
    _frozen(forfeit_wins=1),
)
MATCH_FORFEIT_LOST = EventType(
    "match_forfeit_lost",
    "Forfeited a match; counted apart from losses.",
    MatchOutcomeMetadata,
    _frozen(forfeit_losses=1),
)
TOURNAMENT_REGISTERED = EventType(
    "tournament_registered",
    "Registered for a tournament (alone or with a team). Changes no stat.",
    TournamentMetadata,
)
TOURNAMENT_CHECKED_IN = EventType(
    "tournament_checked_in",
    "Checked in to a tournament: the player takes part.",
    TournamentMetadata,
    _frozen(tournaments_played=1),
)
TOURNAMENT_COMPLETED = EventType(
    "tournament_completed",
    "Played a tournament to its end. Never given to no-shows or withdrawn entrants.",
    TournamentMetadata,
    _frozen(tournaments_completed=1),
)
TOURNAMENT_WON = EventType(
    "tournament_won",
    "Won a tournament, alone or as a member of the winning team at the time.",
    TournamentWinMetadata,
    _frozen(tournaments_won=1),
    solo_deltas=_frozen(solo_tournament_wins=1),
    team_deltas=_frozen(team_tournament_wins=1),
)

_ORIGINALS = (
    MATCH_WON,
    MATCH_LOST,
    MATCH_FORFEIT_WON,
    MATCH_FORFEIT_LOST,
    TOURNAMENT_REGISTERED,
    TOURNAMENT_CHECKED_IN,
    TOURNAMENT_COMPLETED,
    TOURNAMENT_WON,
)
_REVERSIBLE = (MATCH_WON, MATCH_LOST, MATCH_FORFEIT_WON, MATCH_FORFEIT_LOST, TOURNAMENT_WON)

EVENT_TYPES: Mapping[str, EventType] = MappingProxyType(
    {t.name: t for t in (*_ORIGINALS, *(_reversal_of(t) for t in _REVERSIBLE))}
)


def event_type(name: str) -> EventType:
    """Return the event type called ``name`` or raise ``Invalid``."""
    try:
        return EVENT_TYPES[name]
    except (KeyError, TypeError):
        raise Invalid(
            f"unknown event type {name!r}; known types: {', '.join(sorted(EVENT_TYPES))}"
        ) from None


def _check_table() -> None:
    for t in EVENT_TYPES.values():
        for deltas in (t.deltas, t.solo_deltas, t.team_deltas):
            unknown = set(deltas) - set(STAT_NAMES)
            if unknown:
                raise RuntimeError(f"{t.name} changes unknown stats {sorted(unknown)}")


_check_table()


def taxonomy_markdown() -> str:
    """Render the taxonomy as the Markdown page docs/taxonomy.md (a test keeps the two equal)."""

    def type_name(annotation: Any) -> str:
        return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "").replace(" | ", " or ")

    def deltas_text(t: EventType) -> str:
        parts = [", ".join(f"{k} {v:+d}" for k, v in t.deltas.items())]
        if t.solo_deltas:
            parts.append("solo: " + ", ".join(f"{k} {v:+d}" for k, v in t.solo_deltas.items()))
        if t.team_deltas:
            parts.append("team: " + ", ".join(f"{k} {v:+d}" for k, v in t.team_deltas.items()))
        return "; ".join(p for p in parts if p) or "none"

    lines = [
        "# Event taxonomy",
        "",
        "Every event type, its metadata and its stat deltas. The source is",
        "`webapp/domain/taxonomy.py`; this page is generated from it by `taxonomy_markdown()`, and a",
        "test fails when the two differ.",
        "",
        "- Every event counts in the `all` stats scope; events of private tournaments do not count in `public`.",
        "- Tournament wins add to `team_tournament_wins` when the event has a team, else to `solo_tournament_wins`.",
        "- A reversal's deltas are its original's, negated, so it undoes it exactly; an event is reversed at most once.",
        "- Metadata is strict and closed: unknown fields are refused, ids must be integers, and other players,",
        "  teams and tournaments are referred to by id only.",
        "",
        "| event type | meaning | metadata | stat deltas |",
        "| --- | --- | --- | --- |",
    ]
    for t in EVENT_TYPES.values():
        fields = "<br>".join(
            f"`{name}`: {type_name(f.annotation)}{'' if f.is_required() else ' (optional)'}"
            for name, f in t.metadata_model.model_fields.items()
        )
        lines.append(f"| `{t.name}` | {t.description} | {fields or '-'} | {deltas_text(t)} |")
    return "\n".join(lines) + "\n"
