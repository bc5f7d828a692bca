"""Stats stay the sum of the events, whatever arrives: a property-based test.

Hypothesis records random sequences of facts for a few players: match results
and forfeits, registrations, solo and team tournament wins, in public and
private tournaments, with exact repeats, repeats that disagree with what is
stored, reversals of stored events (and attempts to reverse one twice), and
batches with an invalid fact that must change nothing. After every sequence
the stored stats must equal what reconciliation computes from the events,
reconciliation must find no drift, and both must equal the taxonomy's deltas
summed over one event per idempotency key, kept by the test on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from tests.conftest import T0
from webapp.domain.errors import Invalid
from webapp.domain.projection import ProjectedEvent, expected_stats, stat_deltas
from webapp.domain.reconciliation import find_drift
from webapp.domain.recording import EventKey, NewEvent, record_events
from webapp.models import ActivityEvent, DataQualityFinding, PlayerStats
from webapp.transaction import unit_of_work

PLAYERS = 4
MATCH_TYPES = ("match_won", "match_lost", "match_forfeit_won", "match_forfeit_lost")
REGISTRATION_TYPES = ("tournament_registered", "tournament_checked_in", "tournament_completed")
TOURNAMENTS = (None, "public", "private")

# Facts draw their sources from small pools so that sequences repeat themselves often.
sources = st.integers(min_value=1, max_value=3)
# A fact's occurred_at is its source's time plus this many minutes: a non-zero
# value on a repeat makes it disagree with the stored event.
drifts = st.sampled_from((0, 0, 0, 5))


@dataclass(frozen=True)
class Fact:
    """A fact described by indexes, turned into a ``NewEvent`` once the players exist."""

    player: int
    event_type: str
    source: int
    tournament: str | None
    as_team: bool
    marked_private: bool
    minutes: int


@dataclass(frozen=True)
class Reversal:
    """Undo the ``pick``-th stored reversible event, as dispute resolution ``source`` would."""

    pick: int
    source: int
    minutes: int


@dataclass(frozen=True)
class Batch:
    facts: tuple[Fact, ...]
    # Adds a fact about a player who does not exist: the whole batch must be refused.
    poisoned: bool


facts = st.builds(
    Fact,
    player=st.integers(0, PLAYERS - 1),
    event_type=st.sampled_from((*MATCH_TYPES, *REGISTRATION_TYPES, "tournament_won")),
    source=sources,
    tournament=st.sampled_from(TOURNAMENTS),
    as_team=st.booleans(),
    marked_private=st.booleans(),
    minutes=drifts,
)
reversals = st.builds(Reversal, pick=st.integers(0, 50), source=st.integers(1, 2), minutes=drifts)
batches = st.builds(Batch, facts=st.lists(facts, min_size=2, max_size=5).map(tuple), poisoned=st.booleans())
steps = st.lists(st.one_of(facts, facts, reversals, batches), min_size=1, max_size=12)


@pytest.fixture
def world(session, make_player, make_team, make_tournament):
    """Four players, two teams (one player is on both) and a public and a private tournament."""
    players = [make_player(f"prop{n}") for n in range(PLAYERS)]
    owls = make_team("Owls", players[0:3])
    larks = make_team("Larks", players[2:4])
    return {
        "players": [p.id for p in players],
        "team_of": {players[0].id: owls.id, players[1].id: owls.id, players[2].id: larks.id,
                    players[3].id: larks.id},
        "tournaments": {
            None: None,
            "public": make_tournament("Open Cup").id,
            "private": make_tournament("Invitational", is_private=True).id,
        },
    }


def new_event(world, fact: Fact) -> NewEvent:
    player_id = world["players"][fact.player]
    team_id = world["team_of"][player_id] if fact.as_team else None
    if fact.event_type in MATCH_TYPES:
        source_model, metadata = "match", {"round": "R1", "side": "a", "opponent_player_ids": [fact.source]}
    elif fact.event_type == "tournament_won":
        source_model, metadata = "tournament_result", {"is_team_win": team_id is not None}
    else:
        source_model, metadata = "registration", {"registration_id": fact.source}
    return NewEvent(
        player_id=player_id,
        event_type=fact.event_type,
        occurred_at=T0 + timedelta(hours=fact.source, minutes=fact.minutes),
        source_model=source_model,
        source_id=fact.source,
        team_id=team_id,
        tournament_id=world["tournaments"][fact.tournament],
        is_private=fact.marked_private,
        metadata=metadata,
    )


class Ledger:
    """The test's own account of which event each idempotency key holds."""

    def __init__(self, world) -> None:
        self.private_tournaments = {world["tournaments"]["private"]}
        self.events: dict[EventKey, ProjectedEvent] = {}

    def add(self, event: NewEvent, original: ActivityEvent | None = None) -> None:
        if original is not None:  # a reversal counts as its original did
            is_team, is_private = original.team_id is not None, original.is_private
        else:
            is_team = event.team_id is not None
            is_private = event.is_private or event.tournament_id in self.private_tournaments
        self.events.setdefault(event.key, ProjectedEvent(event.player_id, event.event_type, is_team, is_private))

    def stats(self) -> dict:
        return {key: values for key, values in stat_deltas(self.events.values()).items() if any(values.values())}


def stored_stats(session) -> dict:
    return {
        (row.player_id, row.scope): row.as_dict()
        for row in session.scalars(select(PlayerStats))
        if any(row.as_dict().values())
    }


def snapshot(session) -> tuple:
    session.rollback()
    return (
        session.scalar(select(func.count()).select_from(ActivityEvent)),
        session.scalar(select(func.count()).select_from(DataQualityFinding)),
        stored_stats(session),
    )


def forget_everything_recorded(session) -> None:
    session.rollback()
    with unit_of_work(session):
        for model in (DataQualityFinding, ActivityEvent, PlayerStats):
            session.execute(delete(model))


def apply_fact_or_batch(session, world, ledger: Ledger, step: Fact | Batch) -> None:
    given_facts = step.facts if isinstance(step, Batch) else (step,)
    events = [new_event(world, fact) for fact in given_facts]
    if isinstance(step, Batch) and step.poisoned:
        before = snapshot(session)
        ghost = events[0]._replace(player_id=max(world["players"]) + 1000)
        with pytest.raises(Invalid, match="unknown player"):
            with unit_of_work(session):
                record_events(session, [*events, ghost])
        assert snapshot(session) == before, "a refused batch changes nothing"
        return
    with unit_of_work(session):
        record_events(session, events)
    for event in events:
        ledger.add(event)


def apply_reversal(session, ledger: Ledger, step: Reversal) -> None:
    session.rollback()
    reversible = session.scalars(
        select(ActivityEvent)
        .where(ActivityEvent.reverses_event_id.is_(None), ~ActivityEvent.event_type.in_(REGISTRATION_TYPES))
        .order_by(ActivityEvent.id)
    ).all()
    if not reversible:
        return
    original = reversible[step.pick % len(reversible)]
    reversal = NewEvent(
        player_id=original.player_id,
        event_type=f"{original.event_type}_reversed",
        occurred_at=T0 + timedelta(days=1, minutes=step.minutes),
        source_model="dispute_resolution",
        source_id=step.source,
        origin="dispute",
        reverses_event_id=original.id,
    )
    earlier = session.scalars(select(ActivityEvent).filter_by(reverses_event_id=original.id)).first()
    if earlier is not None and (earlier.source_model, earlier.source_id) != ("dispute_resolution", step.source):
        before = snapshot(session)
        with pytest.raises(Invalid, match="already reversed"):
            with unit_of_work(session):
                record_events(session, [reversal])
        assert snapshot(session) == before, "a second reversal of one event changes nothing"
        return
    with unit_of_work(session):
        record_events(session, [reversal])
    ledger.add(reversal, original)


def check_stats_against_events(session, ledger: Ledger) -> None:
    session.rollback()
    stored = stored_stats(session)
    assert stored == expected_stats(session), "stored stats differ from what reconciliation computes"
    report = find_drift(session)
    session.rollback()
    assert report.drifts == []
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == len(ledger.events)
    assert stored == ledger.stats(), "stats differ from one event per key summed by hand"


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
def test_any_sequence_of_facts_leaves_stats_equal_to_their_events(session, world, steps):
    forget_everything_recorded(session)
    ledger = Ledger(world)
    for step in steps:
        if isinstance(step, Reversal):
            apply_reversal(session, ledger, step)
        else:
            apply_fact_or_batch(session, world, ledger, step)
    check_stats_against_events(session, ledger)
