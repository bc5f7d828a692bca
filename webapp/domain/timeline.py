"""A player's event timeline: newest first, keyset-paginated, filtered.

One page costs two statements whatever its size:

1. ``timeline_page``: the keyset query on ``ix_activity_events_player_timeline``
   (player_id, occurred_at, id), ``LIMIT n + 1`` to learn whether more
   follow; never OFFSET, never COUNT(*);
2. ``names_and_reversal_links``: one statement for the names of every player,
   team and tournament the page refers to (``load_names`` alone) and for the
   reversals that undid events on the page (``reversal_links`` alone).

``feed_page`` does both and presents the events for a viewer through
``webapp.domain.privacy``; the API and the dashboard both call it.

An unfiltered page, what the API and the dashboard ask for most, runs its
keyset query compiled once per database and sent through the driver, its rows
decoded straight into ``TimelineEvent``: on a query this cheap SQLAlchemy's
per-statement handling (cache lookup, parameter and row processing) costs as
much as the query itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    String,
    any_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

from webapp.database import run_on_driver
from webapp.domain.cursors import decode_cursor, encode_cursor
from webapp.domain.errors import Forbidden, Invalid
from webapp.domain.privacy import (
    EventLike,
    FeedOwner,
    Names,
    PlayerName,
    TournamentName,
    Viewer,
    can_view_feed,
    present_event,
)
from webapp.domain.taxonomy import EVENT_TYPES
from webapp.models.activity import ORIGINS, ActivityEvent
from webapp.models.base import UTCDateTime
from webapp.models.competitions import Tournament
from webapp.models.players import Player, Team
from webapp.observability import FEED_QUERY, TIMELINE_QUERY, observed

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class TimelineFilters:
    """Which events a timeline shows; every filter given must match.

    ``occurred_from`` is inclusive and ``occurred_to`` exclusive, so adjacent
    ranges never share an event. ``exclude_private`` leaves out events of
    private tournaments.

    :raise Invalid: on an unknown event type or origin, or a bad date range.
    """

    event_types: tuple[str, ...] = ()
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    origins: tuple[str, ...] = ()
    tournament_id: int | None = None
    exclude_private: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_types", _names(self.event_types, "event type"))
        object.__setattr__(self, "origins", _names(self.origins, "origin"))
        unknown = [t for t in self.event_types if t not in EVENT_TYPES]
        if unknown:
            known = ", ".join(sorted(EVENT_TYPES))
            raise Invalid(f"unknown event type(s) {', '.join(unknown)}; known: {known}")
        unknown = [o for o in self.origins if o not in ORIGINS]
        if unknown:
            raise Invalid(f"unknown origin(s) {', '.join(unknown)}; known: {', '.join(ORIGINS)}")
        for name in ("occurred_from", "occurred_to"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise Invalid(f"{name} must be a timezone-aware date and time")
        if self.occurred_from and self.occurred_to and self.occurred_from >= self.occurred_to:
            raise Invalid("occurred_from must be before occurred_to")
        if self.tournament_id is not None and (
            not isinstance(self.tournament_id, int) or isinstance(self.tournament_id, bool)
        ):
            raise Invalid("tournament_id must be an integer")


def _names(values: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    values = tuple(dict.fromkeys(values))
    if not all(isinstance(v, str) for v in values):
        raise Invalid(f"every {what} must be a string")
    return values


@dataclass(frozen=True)
class TimelineEvent:
    """One event as a timeline reads it: the columns of ``ActivityEvent``."""

    id: int
    player_id: int
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    source_model: str
    source_id: int
    origin: str
    origin_id: int | None
    team_id: int | None
    tournament_id: int | None
    is_private: bool
    details: Mapping[str, Any]
    reverses_event_id: int | None


@dataclass(frozen=True)
class TimelinePage:
    """Events newest first; ``next_cursor`` is None on the last page."""

    events: list[TimelineEvent]
    next_cursor: str | None


_events = ActivityEvent.__table__

# Built once: each page only binds values. Unfiltered, they are compiled once
# per database (``_driver_statement``); filtered, SQLAlchemy caches the forms.
_PAGE = (
    select(
        _events.c.id,
        _events.c.player_id,
        _events.c.event_type,
        _events.c.occurred_at,
        _events.c.recorded_at,
        _events.c.source_model,
        _events.c.source_id,
        _events.c.origin,
        _events.c.origin_id,
        _events.c.team_id,
        _events.c.tournament_id,
        _events.c.is_private,
        _events.c.metadata,
        _events.c.reverses_event_id,
    )
    .where(_events.c.player_id == bindparam("player_id"))
    .order_by(_events.c.occurred_at.desc(), _events.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
)
# A row-value comparison: both databases read it as one range on the index.
_PAGE_AFTER = _PAGE.where(
    tuple_(_events.c.occurred_at, _events.c.id)
    < tuple_(
        bindparam("after_occurred_at", type_=_events.c.occurred_at.type),
        bindparam("after_id", type_=_events.c.id.type),
    )
)

_CURSOR_FIELDS = {"occurred_at": datetime, "id": int}


def timeline_page(
    session: Session,
    player_id: int,
    *,
    filters: TimelineFilters | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> TimelinePage:
    """Return one page of ``player_id``'s events, newest first, after ``cursor``.

    :raise Invalid: on a cursor this module did not issue, or a limit outside 1..MAX_LIMIT.
    """
    limit = _checked_limit(limit)
    with observed(TIMELINE_QUERY):
        return _timeline_page(session, player_id, filters, cursor, limit)


def _timeline_page(
    session: Session, player_id: int, filters: TimelineFilters | None, cursor: str | None, limit: int
) -> TimelinePage:
    parameters = {"player_id": player_id, "limit": limit + 1}
    statement = _PAGE
    if cursor is not None:
        position = decode_cursor(cursor, _CURSOR_FIELDS)
        parameters.update(after_occurred_at=position["occurred_at"], after_id=position["id"])
        statement = _PAGE_AFTER
    connection = session.connection()
    if filters is None or filters == _NO_FILTERS:
        events = _driver_statement(connection.dialect, statement).events(connection, parameters)
    else:
        events = _timeline_events(connection.execute(_filtered(statement, filters), parameters))
    next_cursor = None
    if len(events) > limit:
        del events[limit:]
        last = events[-1]
        next_cursor = encode_cursor({"occurred_at": last.occurred_at.isoformat(), "id": last.id})
    return TimelinePage(events, next_cursor)


_NO_FILTERS = TimelineFilters()


@dataclass(frozen=True)
class _DriverStatement:
    """A page query compiled for one database, run through the driver.

    Parameters and values go through the columns' own bind and result
    processors, so a page reads exactly what ``Connection.execute`` would give;
    on SQLite the times take a quicker path to the same values.
    """

    sql: str
    positions: tuple[str, ...] | None  # parameter order for a positional driver (sqlite3)
    fixed: Mapping[str, Any]  # values the statement carries itself, e.g. SQLite's OFFSET 0
    bind_processors: Mapping[str, Callable[[Any], Any]]
    result_processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column index, processor)

    def events(self, connection: Connection, given: Mapping[str, Any]) -> list[TimelineEvent]:
        """Run the statement with ``given`` parameter values; return its rows as events."""
        values = dict(self.fixed)
        for name, value in given.items():
            process = self.bind_processors.get(name)
            values[name] = value if process is None else process(value)
        parameters = values if self.positions is None else tuple(values[n] for n in self.positions)
        rows = run_on_driver(connection, self.sql, parameters)
        if not rows:
            return []
        # Column by column: each processor is mapped over its column in one pass.
        columns: list[Iterable[Any]] = list(zip(*rows, strict=True))
        for index, process in self.result_processors:
            columns[index] = map(process, columns[index])
        return _timeline_events(zip(*columns, strict=True))


_EVENT_FIELDS = tuple(f.name for f in fields(TimelineEvent))


def _timeline_events(rows: Iterable[Sequence[Any]]) -> list[TimelineEvent]:
    """Return ``TimelineEvent(*row)`` for each row, built at half the cost.

    A frozen dataclass's ``__init__`` sets each of its 14 fields through
    ``object.__setattr__``; filling the instance's ``__dict__`` in one update
    gives the same object (the class has no defaults and no ``__post_init__``).
    """
    new = object.__new__
    events = []
    for row in rows:
        event = new(TimelineEvent)
        event.__dict__.update(zip(_EVENT_FIELDS, row, strict=True))
        events.append(event)
    return events


@lru_cache(maxsize=8)
def _driver_statement(dialect: Dialect, statement) -> _DriverStatement:
    compiled = statement.compile(dialect=dialect)
    bind_processors = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            bind_processors[name] = process
    fixed = {}
    for name, value in compiled.params.items():
        if not compiled.binds[name].required:
            process = bind_processors.get(name)
            fixed[name] = value if process is None else process(value)
    result_processors = []
    for index, column in enumerate(statement.selected_columns):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            result_processors.append((index, _quicker(column.type, dialect, process)))
    positions = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    return _DriverStatement(
        compiled.string, positions, fixed, bind_processors, tuple(result_processors)
    )


def _quicker(column_type, dialect: Dialect, process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Return a quicker equivalent of ``process`` for the values SQLite hands back, if there is one.

    Decoding is most of what a page costs on SQLite, where times come back as
    text (JSON is read by the engine's orjson deserializer). The quicker path
    handles only the text it is sure of and hands anything else to the
    column's own processor.
    """
    if dialect.name != "sqlite":
        return process
    if isinstance(column_type, UTCDateTime):
        return _sqlite_utc_time(process)
    return process


def _sqlite_utc_time(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    # UTCDateTime keeps naive UTC text on SQLite. Parsing it with the offset
    # appended gives the same aware datetime as parsing it and then setting
    # tzinfo, at a quarter of the cost (datetime.replace parses its keywords).
    fromisoformat = datetime.fromisoformat

    def utc_time(value):
        if value.__class__ is str:
            try:
                return fromisoformat(value + "+00:00")
            except ValueError:  # an offset of its own, or not a time at all
                pass
        return process(value)

    return utc_time


def _checked_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
    return limit


def _filtered(statement, filters: TimelineFilters):
    if filters.event_types:
        statement = statement.where(_events.c.event_type.in_(filters.event_types))
    if filters.origins:
        statement = statement.where(_events.c.origin.in_(filters.origins))
    if filters.occurred_from is not None:
        statement = statement.where(_events.c.occurred_at >= filters.occurred_from)
    if filters.occurred_to is not None:
        statement = statement.where(_events.c.occurred_at < filters.occurred_to)
    if filters.tournament_id is not None:
        statement = statement.where(_events.c.tournament_id == filters.tournament_id)
    if filters.exclude_private:
        statement = statement.where(_events.c.is_private.is_(False))
    return statement


def referenced_ids(events: Iterable[EventLike]) -> tuple[set[int], set[int], set[int]]:
    """Return the player, team and tournament ids that ``events`` refer to."""
    players: set[int] = set()
    teams: set[int] = set()
    tournaments: set[int] = set()
    for event in events:
        details = event.details or {}
        players.update(details.get("opponent_player_ids", ()))
        for team_id in (event.team_id, details.get("opponent_team_id")):
            if team_id is not None:
                teams.add(team_id)
        if event.tournament_id is not None:
            tournaments.add(event.tournament_id)
    return players, teams, tournaments


def _in_id_list(column, name: str, dialect: str):
    """Return "``column`` is one of the ids bound as ``name``" with one parameter.

    One text parameter however many ids: the SQL text never changes, so
    neither SQLAlchemy nor the driver prepares it again, as they would for
    every new length of an expanding ``IN (?, ?, ...)``, and the driver has
    one string to send rather than a list to convert element by element.
    """
    ids = bindparam(name, type_=String())
    if dialect == "postgresql":
        return column == any_(cast(ids, postgresql.ARRAY(BigInteger)))
    return column.in_(select(literal_column("value")).select_from(func.json_each(ids)))


def _id_list(ids: Iterable[int], dialect: str) -> str:
    """Return ``ids`` as the text ``_in_id_list`` binds: a PostgreSQL array or a JSON one."""
    listed = ",".join(str(int(i)) for i in sorted(ids))
    return f"{{{listed}}}" if dialect == "postgresql" else f"[{listed}]"


def _lookup_part(kind: str, dialect: str, id_column, a, b, c, flag, ref):
    # Same labels in every part, so the union's columns line up on both databases.
    return select(
        literal(kind, String()).label("kind"),
        id_column.label("id"),
        a.label("a"),
        b.label("b"),
        c.label("c"),
        flag.label("flag"),
        ref.label("ref"),
    ).where(_in_id_list(id_column, f"{kind}_ids", dialect))


def _lookup_parts(dialect: str, *, names: bool, reversals: bool) -> list:
    no_text, no_flag, no_ref = (
        cast(null(), String()),
        cast(null(), Boolean),
        cast(null(), BigInteger),
    )
    players, teams, tournaments = Player.__table__, Team.__table__, Tournament.__table__
    parts = []
    if names:
        parts += [
            # An erased player's row and a tombstone are left out, so they are
            # shown as a player who no longer exists: "[deleted player]".
            _lookup_part(
                "player",
                dialect,
                players.c.id,
                players.c.public_id,
                players.c.username,
                players.c.display_name,
                no_flag,
                no_ref,
            ).where(players.c.erased_at.is_(None), players.c.is_tombstone.is_(False)),
            _lookup_part(
                "team", dialect, teams.c.id, teams.c.name, no_text, no_text, no_flag, no_ref
            ),
            _lookup_part(
                "tournament",
                dialect,
                tournaments.c.id,
                tournaments.c.name,
                no_text,
                no_text,
                tournaments.c.is_private,
                no_ref,
            ),
        ]
    if reversals:
        # id: the event undone; ref: the reversal that undid it.
        parts.append(
            _lookup_part(
                "reversed",
                dialect,
                _events.c.reverses_event_id,
                no_text,
                no_text,
                no_text,
                no_flag,
                _events.c.id,
            )
        )
    return parts


@cache
def _lookup_statement(dialect: str, names: bool, reversals: bool):
    parts = _lookup_parts(dialect, names=names, reversals=reversals)
    return parts[0] if len(parts) == 1 else union_all(*parts)


def _look_up(
    session: Session, events: Sequence[EventLike], *, names: bool, reversals: bool
) -> tuple[Names, dict[int, int]]:
    """Run one statement for the names and/or reversal links a page needs."""
    player_ids, team_ids, tournament_ids = referenced_ids(events) if names else ((), (), ())
    reversible = (
        {e.id for e in events if f"{e.event_type}_reversed" in EVENT_TYPES} if reversals else ()
    )
    if not (player_ids or team_ids or tournament_ids or reversible):
        return Names(), {}
    connection = session.connection()
    dialect = connection.dialect.name
    parameters = {}
    if names:
        parameters.update(
            player_ids=_id_list(player_ids, dialect),
            team_ids=_id_list(team_ids, dialect),
            tournament_ids=_id_list(tournament_ids, dialect),
        )
    if reversals:
        parameters["reversed_ids"] = _id_list(reversible, dialect)
    players: dict[int, PlayerName] = {}
    teams: dict[int, str] = {}
    tournaments: dict[int, TournamentName] = {}
    reversed_by: dict[int, int] = {}
    rows = connection.execute(_lookup_statement(dialect, names, reversals), parameters).all()
    for kind, id_, a, b, c, flag, ref in rows:
        if kind == "player":
            players[id_] = PlayerName(public_id=a, username=b, display_name=c)
        elif kind == "team":
            teams[id_] = a
        elif kind == "tournament":
            tournaments[id_] = TournamentName(name=a, is_private=bool(flag))
        else:
            reversed_by[id_] = ref
    return Names(players=players, teams=teams, tournaments=tournaments), reversed_by


def load_names(session: Session, events: Sequence[EventLike]) -> Names:
    """Look up, in one statement, the names of everything ``events`` refer to."""
    return _look_up(session, events, names=True, reversals=False)[0]


def reversal_links(session: Session, events: Sequence[EventLike]) -> dict[int, int]:
    """Return ``{event id: id of the reversal that undid it}`` for events on a page."""
    return _look_up(session, events, names=False, reversals=True)[1]


def names_and_reversal_links(
    session: Session, events: Sequence[EventLike]
) -> tuple[Names, dict[int, int]]:
    """Return ``load_names`` and ``reversal_links`` of a page, from one statement."""
    return _look_up(session, events, names=True, reversals=True)


@dataclass(frozen=True)
class FeedPage:
    """A page of events as one viewer may see them (JSON-ready dicts)."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    events: list[TimelineEvent] = field(repr=False, default_factory=list)
    names: Names = field(repr=False, default_factory=Names)


def feed_page(
    session: Session,
    player: FeedOwner,
    viewer: Viewer,
    *,
    filters: TimelineFilters | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> FeedPage:
    """Return one page of ``player``'s feed presented for ``viewer``.

    A redacted viewer filtering by tournament matches only events of public
    tournaments, so the filter cannot tie masked events to a private one.

    :raise Forbidden: if ``viewer`` may not see this feed.
    :raise Invalid: on bad filters, cursor or limit.
    """
    if not can_view_feed(player, viewer):
        raise Forbidden("this player's feed is private")
    with observed(FEED_QUERY):
        return _feed_page(session, player, viewer, filters or TimelineFilters(), cursor, limit)


def _feed_page(
    session: Session, player: FeedOwner, viewer: Viewer, filters: TimelineFilters,
    cursor: str | None, limit: int,
) -> FeedPage:
    if filters.tournament_id is not None and not viewer.sees_everything_of(player.id):
        filters = replace(filters, exclude_private=True)
    page = timeline_page(session, player.id, filters=filters, cursor=cursor, limit=limit)
    names, reversed_by = names_and_reversal_links(session, page.events)
    items = [
        present_event(event, viewer, names, reversed_by=reversed_by.get(event.id))
        for event in page.events
    ]
    return FeedPage(items, page.next_cursor, page.events, names)
