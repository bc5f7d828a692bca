"""Deterministic demo data: a platform history and its events, recorded like live traffic.

The same seed, scale and reference date always give the same players, teams,
tournaments, registrations, matches and results, and so the same events. Times
are anchored to ``as_of`` (not today), with the history spread over the two
years before it.

The history is planned in memory first (pure, from one ``random.Random``),
then the platform records are bulk-inserted, and finally every registration,
decided match and tournament result goes through the result services
(``webapp.domain.results``) and ``record_events`` in batches, exactly as the
platform's own reports would. Disputed matches get no events: their outcome is
not settled; each waits in the dispute queue, reported by its side B.

At scale 1.0 the history holds about 2,000 players, 300 teams of two to five
(members join and leave over time), 150 tournaments (a tenth private, a third
team-based, a few still running or upcoming) and 20,000 matches played as a
Swiss stage followed by a single-elimination playoff, with forfeits, no-shows,
withdrawn registrations and a few disputed matches.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from webapp.domain import gdpr_requests
from webapp.domain.audit import SYSTEM, Actor
from webapp.domain.disputes import report_dispute
from webapp.domain.errors import Conflict, Invalid
from webapp.domain.monitoring import fold_event_volume
from webapp.domain.recording import NewEvent, record_events
from webapp.domain.results import (
    TeamRoster,
    match_events,
    registration_events,
    tournament_result_events,
)
from webapp.domain.staff import create_staff, demo_account_email
from webapp.models import (
    Match,
    Placement,
    Player,
    Registration,
    Team,
    TeamMembership,
    Tournament,
    TournamentResult,
)
from webapp.models.base import utcnow
from webapp.models.players import format_public_id
from webapp.models.staff import StaffUser

DEFAULT_SEED = 2026
DEFAULT_AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
DEFAULT_BATCH_SIZE = 5_000
HISTORY = timedelta(days=730)

# Sizes at scale 1.0, and the floors that keep every kind of record present at small scales.
PLAYERS, MIN_PLAYERS = 2_000, 40
TEAMS, MIN_TEAMS = 300, 4
TOURNAMENTS, MIN_TOURNAMENTS = 150, 5
MATCHES = 20_000
MAX_SCALE = 50.0
POSTGRESQL_INSERT_PAGE_ROWS = 200

PRIVATE_SHARE = 0.10
TEAM_BASED_SHARE = 1 / 3
UPCOMING_SHARE = 0.03
RUNNING_SHARE = 0.015
PUBLIC_FEED_SHARE = 0.30
VETERAN_SHARE = 0.40  # players who joined before the history starts
WITHDRAWN_SHARE = 0.05
NO_SHOW_SHARE = 0.06
FORFEIT_SHARE = 0.03
DISPUTED_SHARE = 0.001

SOLO_ENTRANTS = (16, 128)
TEAM_ENTRANTS = (8, 32)
TEAM_SIZE = (2, 5)
ROUNDS_PER_DAY = 5
ROUND_SLOT = timedelta(minutes=80)
PLAYOFF_SIZE = 8
# Seed order of a single-elimination bracket: 1 meets 8, 4 meets 5, and so on.
BRACKETS = {8: (1, 8, 4, 5, 2, 7, 3, 6), 4: (1, 4, 2, 3), 2: (1, 2)}
PLAYOFF_ROUNDS = {8: ("QF", "SF", "F"), 4: ("SF", "F"), 2: ("F",)}
PLAYOFF_ROUND_NAMES = frozenset(PLAYOFF_ROUNDS[PLAYOFF_SIZE])

ProgressCallback = Callable[[str, int, int], None]

_ADJECTIVES = (
    "Amber",
    "Arctic",
    "Azure",
    "Blazing",
    "Bold",
    "Brisk",
    "Cobalt",
    "Cosmic",
    "Crimson",
    "Crystal",
    "Dusk",
    "Ember",
    "Feral",
    "Frost",
    "Gilded",
    "Golden",
    "Hidden",
    "Iron",
    "Jade",
    "Lunar",
    "Midnight",
    "Neon",
    "Nimble",
    "Obsidian",
    "Onyx",
    "Quiet",
    "Rapid",
    "Rogue",
    "Scarlet",
    "Shadow",
    "Silent",
    "Silver",
    "Solar",
    "Static",
    "Steel",
    "Storm",
    "Swift",
    "Thunder",
    "Velvet",
    "Wild",
)
_NOUNS = (
    "Badger",
    "Bear",
    "Cobra",
    "Comet",
    "Condor",
    "Coyote",
    "Dragon",
    "Eagle",
    "Falcon",
    "Fox",
    "Gecko",
    "Golem",
    "Griffin",
    "Hawk",
    "Hornet",
    "Hydra",
    "Jackal",
    "Kestrel",
    "Kraken",
    "Lynx",
    "Mantis",
    "Meteor",
    "Otter",
    "Owl",
    "Panther",
    "Phoenix",
    "Pike",
    "Raven",
    "Rhino",
    "Shark",
    "Sparrow",
    "Specter",
    "Tiger",
    "Titan",
    "Viper",
    "Vortex",
    "Warden",
    "Wolf",
    "Wraith",
    "Yeti",
)
_SOLO_SERIES = (
    "Duel Masters",
    "Solo Ladder Cup",
    "Weekend Clash",
    "Night Owl Open",
    "Rookie Rumble",
)
_TEAM_SERIES = ("Squad League", "Team Showdown", "Clan Wars", "Trio Trials")
_PRIVATE_SERIES = ("Partner Invitational", "Community Scrims", "Closed Qualifier")


@dataclass(frozen=True)
class DemoSummary:
    """What the generator wrote."""

    players: int
    teams: int
    team_memberships: int
    tournaments: int
    private_tournaments: int
    team_tournaments: int
    registrations: dict[str, int]
    matches: dict[str, int]
    tournament_results: int
    events_recorded: int
    events_by_type: dict[str, int] = field(default_factory=dict)
    # GDPR request kind -> its status, as the privacy queue shows them.
    gdpr_requests: list[tuple[str, str]] = field(default_factory=list)


# The plan: records referring to each other by position in their lists, before any id exists.


@dataclass
class _Player:
    created_at: datetime
    username: str
    display_name: str
    feed_visibility: str
    skill: float
    public_id: str = ""


@dataclass
class _Team:
    name: str
    created_at: datetime
    skill: float
    # False for a team that found too few free players when it was founded; it never plays.
    viable: bool = True


@dataclass
class _Membership:
    team: int
    player: int
    joined_at: datetime
    left_at: datetime | None = None


@dataclass
class _Tournament:
    phase: str  # "finished", "running" or "upcoming"
    starts_at: datetime
    is_private: bool = False
    is_team_based: bool = False
    name: str = ""
    ends_at: datetime | None = None


@dataclass
class _Registration:
    tournament: int
    entrant: int  # a player's or a team's position, as the tournament is solo or team-based
    status: str
    registered_at: datetime


@dataclass
class _Match:
    tournament: int
    round: str
    a: int
    b: int
    state: str
    winner_side: str | None
    scheduled_at: datetime
    completed_at: datetime | None
    is_final: bool = False


@dataclass
class _Result:
    tournament: int
    winner: int
    decided_at: datetime
    # (place, entrant): the finalists, then the semi-final losers.
    placements: list[tuple[int, int]]


@dataclass
class _Plan:
    players: list[_Player]
    teams: list[_Team]
    memberships: list[_Membership]
    tournaments: list[_Tournament]
    registrations: list[_Registration]
    matches: list[_Match]
    results: list[_Result]


def generate_demo_data(
    session: Session,
    *,
    seed: int = DEFAULT_SEED,
    scale: float = 1.0,
    as_of: datetime = DEFAULT_AS_OF,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> DemoSummary:
    """Write a deterministic demo history into an empty database and record its events.

    Runs in the caller's transaction. ``progress`` is told ``(stage, done, total)``
    as records are written and events recorded.

    :raise Invalid: if an argument is out of range.
    :raise DatabaseNotEmpty: if the database already holds platform records; nothing is
        written.
    """
    if not 0 < scale <= MAX_SCALE:
        raise Invalid(f"scale must be above 0 and at most {MAX_SCALE:g}, not {scale:g}")
    if as_of.tzinfo is None:
        raise Invalid("as_of must carry a timezone")
    if batch_size < 1:
        raise Invalid(f"batch_size must be at least 1, not {batch_size}")
    _refuse_non_empty(session)
    report = progress or (lambda _stage, _done, _total: None)

    plan = _plan_history(seed=seed, scale=scale, as_of=as_of.astimezone(UTC))
    with _short_insert_statements(session):
        ids = _write_records(session, plan, report)
        facts = _history_events(session, plan, ids)
        by_type: Counter[str] = Counter()
        report("events", 0, len(facts))
        for start in range(0, len(facts), batch_size):
            outcome = record_events(session, facts[start : start + batch_size])
            by_type.update(o.key[1] for o in outcome.recorded)
            report("events", min(start + batch_size, len(facts)), len(facts))
        _open_dispute_cases(session)
        gdpr = _open_gdpr_requests(session, as_of.astimezone(UTC))
    # The monitoring charts read rollups a periodic task folds every minute: fold
    # once now, so they show the demo's events as soon as the dashboard starts.
    fold_event_volume(session)

    return DemoSummary(
        players=len(plan.players),
        teams=len(plan.teams),
        team_memberships=len(plan.memberships),
        tournaments=len(plan.tournaments),
        private_tournaments=sum(t.is_private for t in plan.tournaments),
        team_tournaments=sum(t.is_team_based for t in plan.tournaments),
        registrations=dict(sorted(Counter(r.status for r in plan.registrations).items())),
        matches=dict(sorted(Counter(m.state for m in plan.matches).items())),
        tournament_results=len(plan.results),
        events_recorded=sum(by_type.values()),
        events_by_type=dict(sorted(by_type.items())),
        gdpr_requests=gdpr,
    )


DISPUTE_REASONS = (
    "The score was entered the wrong way round.",
    "Our opponent used a banned setting; we have the replay.",
    "The match was decided after we lost connection, not on the field.",
)


def _open_dispute_cases(session: Session) -> None:
    """Put every disputed match of the history in the dispute queue, reported by its side B."""
    rows = session.execute(
        select(Match.id, Player.public_id, Team.name)
        .outerjoin(Player, Player.id == Match.side_b_player_id)
        .outerjoin(Team, Team.id == Match.side_b_team_id)
        .where(Match.state == "disputed")
        .order_by(Match.id)
    ).all()
    for n, (match_id, public_id, team_name) in enumerate(rows):
        report_dispute(session, SYSTEM, match_id, DISPUTE_REASONS[n % len(DISPUTE_REASONS)],
                       reporter=(public_id or team_name or "")[:100] or None)


def _open_gdpr_requests(session: Session, as_of: datetime) -> list[tuple[str, str]]:
    """Give the privacy queue work: an overdue export with the identity verified, a new erasure.

    Handled by the privacy demo account (``flask staff demo-accounts`` sets its
    password). Requests cannot be received in the future, so a later ``as_of``
    counts from now.
    """
    email = demo_account_email("privacy")
    staff = session.scalars(select(StaffUser).where(StaffUser.email == email)).first()
    if staff is None:
        staff = create_staff(session, SYSTEM, email, ["privacy"]).staff
    actor = Actor(staff_id=staff.id, ip_address=None)
    anchor = min(as_of, utcnow())
    exporter, eraser = session.scalars(
        select(Player.public_id).where(Player.is_tombstone.is_(False), Player.erased_at.is_(None))
        .order_by(Player.id).limit(2)
    ).all()

    export = gdpr_requests.open_request(session, actor, "export", exporter,
                                        received_at=anchor - timedelta(days=40))
    gdpr_requests.record_identity_verification(
        session, actor, export.id, "Signed in to the platform account and confirmed by email")
    gdpr_requests.add_note(session, actor, export.id,
                           "Past the 30-day deadline: export and send the bundle today.")
    erasure = gdpr_requests.open_request(session, actor, "erasure", eraser,
                                         received_at=anchor - timedelta(days=2))
    return [(export.kind, export.status), (erasure.kind, erasure.status)]


@contextmanager
def _short_insert_statements(session: Session) -> Iterator[None]:
    """Send bulk inserts to PostgreSQL as statements of a few hundred rows.

    psycopg converts every statement's placeholders on the client, and a
    statement of SQLAlchemy's default 1,000 rows of a dozen columns costs it far
    more than five statements of 200 rows: at the default size this step took
    three times as long as everything else put together.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield
        return
    previous = connection.get_execution_options().get("insertmanyvalues_page_size")
    connection.execution_options(insertmanyvalues_page_size=POSTGRESQL_INSERT_PAGE_ROWS)
    try:
        yield
    finally:
        connection.execution_options(
            insertmanyvalues_page_size=previous or connection.dialect.insertmanyvalues_page_size
        )


class DatabaseNotEmpty(Conflict):
    """The database already holds platform records, so demo data was not generated."""


def _refuse_non_empty(session: Session) -> None:
    for noun, model in (("player", Player), ("team", Team), ("tournament", Tournament)):
        count = session.scalar(select(func.count()).select_from(model)) or 0
        if count:
            raise DatabaseNotEmpty(
                f"the database already holds {count:,} {noun}{'s' if count > 1 else ''}; "
                "demo data goes only into an empty database, so nothing was written"
            )


def _plan_history(*, seed: int, scale: float, as_of: datetime) -> _Plan:
    """Plan the whole history in memory: the same arguments always give the same plan."""
    rng = random.Random(seed)
    history_start = as_of - HISTORY
    players = _plan_players(rng, max(MIN_PLAYERS, round(PLAYERS * scale)), history_start, as_of)
    teams, memberships = _plan_teams(
        rng, max(MIN_TEAMS, round(TEAMS * scale)), players, history_start, as_of
    )
    tournaments = _plan_tournaments(
        rng, max(MIN_TOURNAMENTS, round(TOURNAMENTS * scale)), teams, history_start, as_of
    )
    registrations = _plan_registrations(rng, tournaments, players, teams, as_of)
    matches, results = _plan_matches(
        rng, round(MATCHES * scale), tournaments, registrations, players, teams, as_of
    )
    return _Plan(players, teams, memberships, tournaments, registrations, matches, results)


def _plural(noun: str) -> str:
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    if noun.endswith(("x", "s", "sh")):
        return noun + "es"
    return noun + "s"


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return _minute(start + (end - start) * rng.random())


def _plan_players(
    rng: random.Random, count: int, history_start: datetime, as_of: datetime
) -> list[_Player]:
    joined = sorted(
        _between(rng, history_start - timedelta(days=540), history_start - timedelta(days=180))
        if rng.random() < VETERAN_SHARE
        else _between(rng, history_start - timedelta(days=180), as_of - timedelta(days=14))
        for _ in range(count)
    )
    taken: set[str] = set()
    players = []
    per_year: Counter[int] = Counter()
    for created_at in joined:
        base = rng.choice(_ADJECTIVES) + rng.choice(_NOUNS)
        display_name = base
        while display_name.lower() in taken:
            display_name = f"{base}{rng.randint(2, 9_999)}"
        taken.add(display_name.lower())
        per_year[created_at.year] += 1
        players.append(
            _Player(
                created_at=created_at,
                username=display_name.lower(),
                display_name=display_name,
                feed_visibility="public" if rng.random() < PUBLIC_FEED_SHARE else "private",
                skill=rng.gauss(1500, 200),
                public_id=format_public_id(created_at.year, per_year[created_at.year]),
            )
        )
    return players


def _plan_teams(
    rng: random.Random, count: int, players: list[_Player], history_start: datetime, as_of: datetime
) -> tuple[list[_Team], list[_Membership]]:
    """Plan teams of two to five whose members come and go, one team per player at a time."""
    names: set[str] = set()
    teams: list[_Team] = []
    for created_at in sorted(
        _between(rng, history_start - timedelta(days=180), history_start + timedelta(days=270))
        for _ in range(count)
    ):
        name = f"{rng.choice(_ADJECTIVES)} {_plural(rng.choice(_NOUNS))}"
        while name in names:
            name = f"{rng.choice(_ADJECTIVES)} {_plural(rng.choice(_NOUNS))} {rng.randint(2, 99)}"
        names.add(name)
        teams.append(_Team(name=name, created_at=created_at, skill=rng.gauss(1500, 200)))

    # Roster changes happen in time order across all teams, so a player who
    # leaves one team can join another later.
    changes: list[tuple[datetime, int, str]] = [
        (t.created_at, i, "found") for i, t in enumerate(teams)
    ]
    for i, team in enumerate(teams):
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            changes.append(
                (
                    _between(rng, team.created_at + timedelta(days=14), as_of - timedelta(days=1)),
                    i,
                    "change",
                )
            )
    changes.sort()

    joined_times = [p.created_at for p in players]
    team_of: dict[int, int] = {}
    open_spans: dict[int, dict[int, _Membership]] = {i: {} for i in range(len(teams))}
    memberships: list[_Membership] = []

    def free_players(at: datetime, excluded: int | None = None) -> list[int]:
        joined = bisect.bisect_right(joined_times, at)
        return [p for p in range(joined) if p not in team_of and p != excluded]

    def join(team: int, player: int, at: datetime) -> None:
        membership = _Membership(team=team, player=player, joined_at=at)
        memberships.append(membership)
        open_spans[team][player] = membership
        team_of[player] = team

    def leave(team: int, player: int, at: datetime) -> None:
        open_spans[team].pop(player).left_at = at
        del team_of[player]

    for at, team, kind in changes:
        roster = open_spans[team]
        if kind == "found":
            candidates = free_players(at)
            size = min(rng.randint(*TEAM_SIZE), len(candidates))
            if size < TEAM_SIZE[0]:
                teams[team].viable = False
                continue
            for player in rng.sample(candidates, size):
                join(team, player, at)
            continue
        if len(roster) < TEAM_SIZE[0]:
            continue  # a team that never found its players stays as it is
        leavers = sorted(p for p, m in roster.items() if m.joined_at < at)
        roll = rng.random()
        if roll < 0.25 and len(roster) > TEAM_SIZE[0] and leavers:
            leave(team, rng.choice(leavers), at)
        elif roll < 0.5 and len(roster) < TEAM_SIZE[1]:
            candidates = free_players(at)
            if candidates:
                join(team, rng.choice(candidates), at)
        elif leavers:
            leaver = rng.choice(leavers)
            candidates = free_players(at, excluded=leaver)
            if candidates:
                leave(team, leaver, at)
                join(team, rng.choice(candidates), at)
            elif len(roster) > TEAM_SIZE[0]:
                leave(team, leaver, at)
    return teams, memberships


def _plan_tournaments(
    rng: random.Random, count: int, teams: list[_Team], history_start: datetime, as_of: datetime
) -> list[_Tournament]:
    upcoming = max(1, round(count * UPCOMING_SHARE))
    running = max(1, round(count * RUNNING_SHARE))
    finished = count - upcoming - running
    tournaments = [_Tournament("finished", as_of) for _ in range(finished)]
    tournaments += [_Tournament("running", as_of) for _ in range(running)]
    tournaments += [_Tournament("upcoming", as_of) for _ in range(upcoming)]

    # At least one finished tournament of each kind, so that every rule shows at any scale.
    def pick(share: float) -> set[int]:
        wanted = max(1, round(count * share))
        first = rng.randrange(finished)
        rest = [i for i in range(count) if i != first]
        return {first, *rng.sample(rest, wanted - 1)}

    for i in pick(TEAM_BASED_SHARE):
        tournaments[i].is_team_based = True
    for i in pick(PRIVATE_SHARE):
        tournaments[i].is_private = True

    # Team tournaments begin once a few teams exist to enter them.
    founded = sorted(t.created_at for t in teams if t.viable) or [history_start]
    team_start = max(
        history_start + timedelta(days=14), founded[min(3, len(founded) - 1)] + timedelta(days=31)
    )
    for t in tournaments:
        evening = timedelta(hours=rng.choice((16, 17, 18, 19)))
        if t.phase == "finished":
            earliest = team_start if t.is_team_based else history_start + timedelta(days=14)
            day = _between(rng, earliest, as_of - timedelta(days=6))
            t.starts_at = day.replace(hour=0, minute=0) + evening
        elif t.phase == "upcoming":
            day = as_of + timedelta(days=rng.randint(2, 20))
            t.starts_at = day.replace(hour=0, minute=0) + evening
        # Running tournaments get their start once their number of rounds is known.
    return tournaments


def _plan_registrations(
    rng: random.Random,
    tournaments: list[_Tournament],
    players: list[_Player],
    teams: list[_Team],
    as_of: datetime,
) -> list[_Registration]:
    registrations: list[_Registration] = []
    for index, t in enumerate(tournaments):
        if t.phase == "running":
            # Provisional: fixed precisely in _plan_matches, within a day of as_of.
            t.starts_at = as_of - timedelta(hours=6)
        cutoff = t.starts_at - timedelta(days=30)
        if t.is_team_based:
            pool = [i for i, team in enumerate(teams) if team.viable and team.created_at <= cutoff]
            low, high = TEAM_ENTRANTS
        else:
            pool = [i for i, player in enumerate(players) if player.created_at <= cutoff]
            low, high = SOLO_ENTRANTS
        entrants = rng.sample(pool, min(rng.randint(low, high), len(pool)))
        window_end = min(t.starts_at - timedelta(hours=1), as_of - timedelta(hours=1))
        played = {"finished": "completed", "running": "checked_in", "upcoming": "registered"}[
            t.phase
        ]
        entries = []
        for entrant in entrants:
            roll = rng.random()
            if roll < WITHDRAWN_SHARE:
                status = "withdrawn"
            elif roll < WITHDRAWN_SHARE + NO_SHOW_SHARE and t.phase != "upcoming":
                status = "no_show"
            else:
                status = played
            registered_at = _between(rng, t.starts_at - timedelta(days=21), window_end)
            entries.append(_Registration(index, entrant, status, registered_at))
        # A tournament that started has at least two entrants who showed up.
        for entry in entries:
            if t.phase == "upcoming" or sum(e.status == played for e in entries) >= 2:
                break
            entry.status = played
        registrations.extend(sorted(entries, key=lambda e: (e.registered_at, e.entrant)))
    return registrations


def _plan_matches(
    rng: random.Random,
    target: int,
    tournaments: list[_Tournament],
    registrations: list[_Registration],
    players: list[_Player],
    teams: list[_Team],
    as_of: datetime,
) -> tuple[list[_Match], list[_Result]]:
    shown: dict[int, list[int]] = {i: [] for i in range(len(tournaments))}
    for r in registrations:
        if r.status in ("completed", "checked_in"):
            shown[r.tournament].append(r.entrant)

    # Swiss stages of about the same length everywhere bring the total near the target.
    started = [i for i, t in enumerate(tournaments) if t.phase != "upcoming"]
    playoff_matches = sum(_playoff_size(len(shown[i])) - 1 for i in started)
    pairs_per_round = sum(len(shown[i]) // 2 for i in started) or 1
    rounds = min(12.0, max(2.0, (target - playoff_matches) / pairs_per_round))

    matches: list[_Match] = []
    results: list[_Result] = []
    for index in started:
        t = tournaments[index]
        if len(shown[index]) < 2:
            continue  # too few entrants (possible only at the smallest scales): nothing to play
        skill = {e: teams[e].skill if t.is_team_based else players[e].skill for e in shown[index]}
        swiss_rounds = max(2, int(rounds) + rng.choice((-1, 0, 0, 1)) + (rng.random() < rounds % 1))
        if t.phase == "running":
            played = rng.randint(1, min(swiss_rounds - 1, ROUNDS_PER_DAY - 1))
            # The next round starts just after as_of; the rounds before it are over.
            t.starts_at = _minute(as_of - ROUND_SLOT * played + timedelta(minutes=5))
        else:
            played = None
        played_matches, result = _play_tournament(
            rng, index, t, shown[index], skill, swiss_rounds, played
        )
        matches.extend(played_matches)
        if result is not None:
            results.append(result)

    # A few settled Swiss results are contested afterwards: no events until staff decide.
    contested = [
        i
        for i, m in enumerate(matches)
        if m.state == "completed"
        and m.round not in PLAYOFF_ROUND_NAMES
        and tournaments[m.tournament].phase == "finished"
    ]
    for i in rng.sample(
        contested, min(len(contested), max(1, round(len(matches) * DISPUTED_SHARE)))
    ):
        matches[i].state = "disputed"

    _name_tournaments(rng, tournaments)
    return matches, results


def _playoff_size(entrants: int) -> int:
    return max(size for size in (2, 4, PLAYOFF_SIZE) if size <= max(entrants, 2))


def _round_time(t: _Tournament, number: int) -> datetime:
    return (
        t.starts_at
        + timedelta(days=number // ROUNDS_PER_DAY)
        + ROUND_SLOT * (number % ROUNDS_PER_DAY)
    )


def _play_tournament(
    rng: random.Random,
    index: int,
    t: _Tournament,
    entrants: Sequence[int],
    skill: dict[int, float],
    swiss_rounds: int,
    played_rounds: int | None,
) -> tuple[list[_Match], _Result | None]:
    """Play a Swiss stage, then a single-elimination playoff; stop at ``played_rounds``."""
    playoff = _playoff_size(len(entrants))
    total_rounds = swiss_rounds + len(PLAYOFF_ROUNDS[playoff])
    t.ends_at = _round_time(t, total_rounds - 1) + timedelta(hours=3)
    tiebreak = {e: rng.random() for e in entrants}
    wins = dict.fromkeys(entrants, 0)
    matches: list[_Match] = []

    def play(round_name: str, number: int, first: int, second: int) -> _Match:
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        at = _round_time(t, number)
        if played_rounds is not None and number >= played_rounds:
            match = _Match(index, round_name, a, b, "scheduled", None, at, None)
        elif rng.random() < FORFEIT_SHARE:
            side = rng.choice(("a", "b"))
            match = _Match(index, round_name, a, b, "forfeit", side, at, at + timedelta(minutes=10))
        else:
            chance_a = 1 / (1 + 10 ** ((skill[b] - skill[a]) / 400))
            side = "a" if rng.random() < chance_a else "b"
            match = _Match(
                index,
                round_name,
                a,
                b,
                "completed",
                side,
                at,
                at + timedelta(minutes=rng.randint(20, 70)),
            )
        matches.append(match)
        return match

    def standings() -> list[int]:
        return sorted(entrants, key=lambda e: (-wins[e], tiebreak[e]))

    for number in range(swiss_rounds):
        order = standings()
        if len(order) % 2:
            wins[order.pop()] += 1  # the last one sits the round out and is given the point
        for first, second in zip(order[::2], order[1::2], strict=True):
            match = play(f"S{number + 1}", number, first, second)
            if match.state == "scheduled":
                continue
            wins[match.a if match.winner_side == "a" else match.b] += 1
        if played_rounds is not None and number >= played_rounds:
            return matches, None

    seeds = standings()[:playoff]
    alive = [seeds[seed - 1] for seed in BRACKETS[playoff]]
    placements: list[tuple[int, int]] = []
    final: _Match | None = None
    for offset, round_name in enumerate(PLAYOFF_ROUNDS[playoff]):
        winners = []
        for first, second in zip(alive[::2], alive[1::2], strict=True):
            match = play(round_name, swiss_rounds + offset, first, second)
            winner, loser = (match.a, match.b) if match.winner_side == "a" else (match.b, match.a)
            winners.append(winner)
            if round_name == "SF":
                placements.append((3, loser))
            if round_name == "F":
                match.is_final = True
                final = match
                placements[:0] = [(1, winner), (2, loser)]
        alive = winners
    assert final is not None and final.completed_at is not None
    return matches, _Result(index, alive[0], final.completed_at, placements)


def _name_tournaments(rng: random.Random, tournaments: list[_Tournament]) -> None:
    numbers: Counter[str] = Counter()
    for t in sorted(tournaments, key=lambda t: t.starts_at):
        if t.is_private:
            series = rng.choice(_PRIVATE_SERIES)
        else:
            series = rng.choice(_TEAM_SERIES if t.is_team_based else _SOLO_SERIES)
        numbers[series] += 1
        t.name = f"{series} #{numbers[series]}"
        if t.ends_at is None:  # upcoming: the format is announced, the rounds are not
            t.ends_at = t.starts_at + timedelta(days=2)


# Writing the records: bulk inserts, in the order the history happened.


@dataclass(frozen=True)
class _Ids:
    players: list[int]
    teams: list[int]
    tournaments: list[int]
    registrations: list[int]
    matches: list[int]
    results: list[int]


def _insert(session: Session, model: type, rows: list[dict]) -> list[int]:
    """Insert ``rows`` in bulk and return their new ids in the order given."""
    if not rows:
        return []
    table = model.__table__
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.execute(statement, rows).scalars())


def _write_records(session: Session, plan: _Plan, report: ProgressCallback) -> _Ids:
    steps = 7
    report("records", 0, steps)
    player_ids = _insert(
        session,
        Player,
        [
            {
                "public_id": p.public_id,
                "username": p.username,
                "display_name": p.display_name,
                "email": f"{p.username}@example.com",
                "feed_visibility": p.feed_visibility,
                "created_at": p.created_at,
            }
            for p in plan.players
        ],
    )
    report("records", 1, steps)
    team_ids = _insert(
        session, Team, [{"name": t.name, "created_at": t.created_at} for t in plan.teams]
    )
    report("records", 2, steps)
    if plan.memberships:
        session.execute(
            insert(TeamMembership.__table__),
            [
                {
                    "team_id": team_ids[m.team],
                    "player_id": player_ids[m.player],
                    "joined_at": m.joined_at,
                    "left_at": m.left_at,
                }
                for m in plan.memberships
            ],
        )
    report("records", 3, steps)

    order = sorted(range(len(plan.tournaments)), key=lambda i: (plan.tournaments[i].starts_at, i))
    inserted = _insert(
        session,
        Tournament,
        [
            {
                "name": t.name,
                "is_private": t.is_private,
                "is_team_based": t.is_team_based,
                "awards_winner": True,
                "starts_at": t.starts_at,
                "ends_at": t.ends_at,
                "created_at": t.starts_at - timedelta(days=30),
            }
            for t in (plan.tournaments[i] for i in order)
        ],
    )
    tournament_ids = [0] * len(order)
    for position, i in enumerate(order):
        tournament_ids[i] = inserted[position]
    report("records", 4, steps)

    def entrant(tournament: int, position: int, prefix: str = "") -> dict[str, int | None]:
        if plan.tournaments[tournament].is_team_based:
            return {f"{prefix}player_id": None, f"{prefix}team_id": team_ids[position]}
        return {f"{prefix}player_id": player_ids[position], f"{prefix}team_id": None}

    registration_ids = _insert(
        session,
        Registration,
        [
            {
                "tournament_id": tournament_ids[r.tournament],
                "status": r.status,
                "registered_at": r.registered_at,
                "created_at": r.registered_at,
                **entrant(r.tournament, r.entrant),
            }
            for r in plan.registrations
        ],
    )
    report("records", 5, steps)
    match_ids = _insert(
        session,
        Match,
        [
            {
                "tournament_id": tournament_ids[m.tournament],
                "round": m.round,
                "state": m.state,
                "winner_side": m.winner_side,
                "scheduled_at": m.scheduled_at,
                "completed_at": m.completed_at,
                "is_final": m.is_final,
                "version": 1,
                "created_at": m.scheduled_at - timedelta(minutes=10),
                **entrant(m.tournament, m.a, "side_a_"),
                **entrant(m.tournament, m.b, "side_b_"),
            }
            for m in plan.matches
        ],
    )
    report("records", 6, steps)
    result_ids = _insert(
        session,
        TournamentResult,
        [
            {
                "tournament_id": tournament_ids[r.tournament],
                "decided_at": r.decided_at,
                "created_at": r.decided_at,
                **{("winner_" + k): v for k, v in entrant(r.tournament, r.winner).items()},
            }
            for r in plan.results
        ],
    )
    placements = [
        {"result_id": result_id, "place": place, **entrant(r.tournament, who)}
        for r, result_id in zip(plan.results, result_ids, strict=True)
        for place, who in r.placements
    ]
    if placements:
        session.execute(insert(Placement.__table__), placements)
    report("records", 7, steps)
    return _Ids(player_ids, team_ids, tournament_ids, registration_ids, match_ids, result_ids)


def _history_events(session: Session, plan: _Plan, ids: _Ids) -> list[NewEvent]:
    """Derive every event through the result services, in the order it happened."""
    roster = TeamRoster.load(session, ids.teams)
    tournaments = [
        Tournament(
            id=ids.tournaments[i],
            name=t.name,
            is_private=t.is_private,
            is_team_based=t.is_team_based,
            awards_winner=True,
            starts_at=t.starts_at,
            ends_at=t.ends_at,
        )
        for i, t in enumerate(plan.tournaments)
    ]

    def side(tournament: int, position: int) -> tuple[int | None, int | None]:
        if plan.tournaments[tournament].is_team_based:
            return None, ids.teams[position]
        return ids.players[position], None

    facts: list[NewEvent] = []
    registrations_of: dict[int, list[Registration]] = {i: [] for i in range(len(tournaments))}
    for r, registration_id in zip(plan.registrations, ids.registrations, strict=True):
        player_id, team_id = side(r.tournament, r.entrant)
        registration = Registration(
            id=registration_id,
            tournament_id=ids.tournaments[r.tournament],
            player_id=player_id,
            team_id=team_id,
            status=r.status,
            registered_at=r.registered_at,
        )
        registrations_of[r.tournament].append(registration)
        facts.extend(registration_events(registration, tournaments[r.tournament], roster))

    for m, match_id in zip(plan.matches, ids.matches, strict=True):
        if m.state not in ("completed", "forfeit"):
            continue
        (a_player, a_team), (b_player, b_team) = side(m.tournament, m.a), side(m.tournament, m.b)
        match = Match(
            id=match_id,
            tournament_id=ids.tournaments[m.tournament],
            round=m.round,
            side_a_player_id=a_player,
            side_a_team_id=a_team,
            side_b_player_id=b_player,
            side_b_team_id=b_team,
            state=m.state,
            winner_side=m.winner_side,
            scheduled_at=m.scheduled_at,
            completed_at=m.completed_at,
            is_final=m.is_final,
        )
        facts.extend(match_events(match, roster))

    for r, result_id in zip(plan.results, ids.results, strict=True):
        winner_player, winner_team = side(r.tournament, r.winner)
        result = TournamentResult(
            id=result_id,
            tournament_id=ids.tournaments[r.tournament],
            winner_player_id=winner_player,
            winner_team_id=winner_team,
            decided_at=r.decided_at,
        )
        facts.extend(
            tournament_result_events(
                result, tournaments[r.tournament], registrations_of[r.tournament], roster
            )
        )

    # Live traffic arrives as things happen.
    facts.sort(
        key=lambda f: (f.occurred_at, f.source_model, f.source_id, f.event_type, f.player_id)
    )
    return facts
