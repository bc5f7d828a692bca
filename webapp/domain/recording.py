"""Recording activity events: idempotent inserts and their stat deltas, together.

An event is identified by its idempotency key (player, event type, source model,
source id). Recording inserts with ON CONFLICT DO NOTHING, so the same fact
recorded twice, even by two processes at once, yields one event; stats change
only for events actually inserted, in the same transaction. A repeat whose
payload differs from the stored event is a conflict: the stored event stands
and the attempt is kept as a data-quality finding.

Nothing is written unless every fact in a call is valid.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from time import perf_counter
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import Result, Table, select, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

from webapp import observability
from webapp.database import dialect_insert, run_on_driver
from webapp.domain.errors import Invalid
from webapp.domain.projection import (
    STATS_UPSERT_COLUMNS,
    STATS_UPSERT_CONFLICT,
    add_stat_rows,
    counted_stat_rows,
)
from webapp.domain.taxonomy import event_type as lookup_event_type
from webapp.json_codec import quicker_json_text
from webapp.models.activity import ORIGINS, ActivityEvent, DataQualityFinding
from webapp.models.base import quicker_sqlite_time, utcnow
from webapp.models.players import TeamMembership
from webapp.models.stats import STAT_NAMES
from webapp.observability import RECORD_EVENTS

# Bound parameters per IN (...) list, well under both databases' limits.
_CHUNK = 2_000
# Archival never takes an event younger than this (see archive.archive_cutoff).
YOUNGEST_ARCHIVABLE = timedelta(days=1)

EventKey = tuple[int, str, str, int]  # (player_id, event_type, source_model, source_id)

# The fields two records of one fact must agree on. Origin is not among them:
# the same match seen live and again by a backfill is one fact.
_PAYLOAD_FIELDS = ("occurred_at", "team_id", "tournament_id", "is_private", "metadata", "reverses_event_id")


# No metadata: shared, so it must not be changed in place.
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


class NewEvent(NamedTuple):
    """A fact to record about one player.

    Immutable, and a named tuple rather than a frozen dataclass: a backfill
    builds millions, and a frozen dataclass costs five times as much to build.
    """

    player_id: int
    event_type: str
    occurred_at: datetime
    source_model: str
    source_id: int
    origin: str = "live"
    origin_id: int | None = None
    team_id: int | None = None
    tournament_id: int | None = None
    # Also set by recording when the tournament is private.
    is_private: bool = False
    metadata: Mapping[str, Any] = _NO_METADATA
    reverses_event_id: int | None = None

    @property
    def key(self) -> EventKey:
        return (self.player_id, self.event_type, self.source_model, self.source_id)


class RecordStatus(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


class RecordOutcome(NamedTuple):
    """What happened to one fact: recorded, or matched to the stored event ``event_id``."""

    key: EventKey
    status: RecordStatus
    event_id: int


@dataclass(frozen=True)
class BatchOutcome:
    """Outcomes in the order the facts were given."""

    outcomes: list[RecordOutcome]

    def _with(self, status: RecordStatus) -> list[RecordOutcome]:
        return [o for o in self.outcomes if o.status is status]

    @property
    def recorded(self) -> list[RecordOutcome]:
        return self._with(RecordStatus.RECORDED)

    @property
    def duplicates(self) -> list[RecordOutcome]:
        return self._with(RecordStatus.DUPLICATE)

    @property
    def conflicts(self) -> list[RecordOutcome]:
        return self._with(RecordStatus.CONFLICT)


def record_event(session: Session, fact: NewEvent) -> RecordOutcome:
    """Record one fact; a repeat is reported as a duplicate (or conflict), never an error."""
    return record_events(session, [fact]).outcomes[0]


class CheckedFacts(NamedTuple):
    """Facts checked on their own (``check_facts``), ready to be recorded.

    Never changed once made: recording replaces a row it must change, so the
    same checked facts can be recorded again after a rollback. A named tuple,
    as cheap to make as the single live result it most often holds.
    """

    facts: Sequence[NewEvent]
    rows: Sequence[Mapping[str, Any]]
    keys: Sequence[EventKey]

    def subset(self, facts: Sequence[NewEvent]) -> CheckedFacts:
        """These checked facts narrowed to ``facts``: some of them, in the same order."""
        if len(facts) == len(self.facts):
            return self
        wanted = {id(fact) for fact in facts}
        chosen = [i for i, fact in enumerate(self.facts) if id(fact) in wanted]
        if len(chosen) != len(facts):
            raise ValueError("the facts are not a selection of the checked facts")
        return CheckedFacts(
            [self.facts[i] for i in chosen], [self.rows[i] for i in chosen], [self.keys[i] for i in chosen]
        )


def check_facts(facts: Sequence[NewEvent]) -> CheckedFacts:
    """Check each fact on its own: its fields, origin and metadata (normalised).

    Needs no database, so a batch can be checked ahead of the transaction that
    records it. What needs the database (that the players, tournaments and team
    memberships exist, what a reversal undoes) is checked when it is recorded.

    :raise Invalid: naming the first fact refused.
    """
    rows = [_validated_row(fact) for fact in facts]
    return CheckedFacts(facts, rows, [_row_key(row) for row in rows])


def record_events(session: Session, facts: Sequence[NewEvent]) -> BatchOutcome:
    """Record many facts in the caller's transaction and say which were new.

    :raise Invalid: if any fact is invalid; then nothing is written.
    """
    started = perf_counter()
    return _recorded(session, check_facts(facts), started)


def record_checked(session: Session, checked: CheckedFacts) -> BatchOutcome:
    """Record facts checked beforehand by ``check_facts``; otherwise as ``record_events``."""
    return _recorded(session, checked, perf_counter())


def _recorded(session: Session, checked: CheckedFacts, started: float) -> BatchOutcome:
    outcome = _record_checked(session, checked)
    # Not reported when recording raised, as with ``observed``.
    observability.notify(
        RECORD_EVENTS,
        perf_counter() - started,
        {"session": session, "facts": checked.facts, "outcome": outcome},
    )
    return outcome


class ConvertedFacts(NamedTuple):
    """Checked facts as the database driver takes them, sorted by key; their recording time is set later.

    What a batch prepared in another process comes back as: tuples of numbers
    and text (on PostgreSQL, and times) cross a process boundary at a fraction
    of what the facts would cost, whose times and metadata mappings would be
    built again on arrival only to be converted.
    """

    dialect: str
    values: list[tuple]  # _INSERT_COLUMNS order


def convert_checked(checked: CheckedFacts, dialect: Dialect) -> ConvertedFacts | None:
    """Convert checked facts for ``dialect``'s driver; ``None`` for facts only ``record_checked`` takes.

    A reversal takes its team, tournament and privacy from the event it
    reverses when it is recorded, so facts with one are not converted ahead.
    """
    rows = checked.rows
    if any(row["reverses_event_id"] is not None for row in rows):
        return None
    keys = checked.keys
    in_key_order = sorted(range(len(rows)), key=keys.__getitem__)
    values = _event_values(dialect, metadata_as_text=True)([rows[i] for i in in_key_order], utcnow())
    return ConvertedFacts(dialect.name, values)


def record_converted(session: Session, converted: ConvertedFacts) -> list[int] | None:
    """Record converted facts when every one is new and passes its checks; return their event ids, in order.

    Otherwise return ``None`` with nothing written: the facts are then for
    ``record_checked``, which names what is wrong with a fact and tells a repeat
    from a conflict. The checks are ``record_checked``'s (players and
    tournaments exist, a private tournament's events are private, team members
    were members at the time, nothing is in cold storage already), made on the
    driver's values.
    """
    values = converted.values
    if not values:
        return []
    started = perf_counter()
    if session.autoflush:
        session.flush()
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != converted.dialect:
        raise ValueError(f"facts converted for {converted.dialect}, recorded on {dialect.name}")
    now = utcnow()
    stored_time = _driver_time(dialect)
    youngest = stored_time(now - YOUNGEST_ARCHIVABLE)
    archivable = [(v[0], v[1], v[4], v[5]) for v in values if v[2] < youngest]
    if archivable and not run_on_driver(connection, _ANY_ARCHIVED_KEY):
        archivable = []
    values = _with_references_checked(connection, values, archivable)
    if values is None or not _members_at_the_time(connection, values):
        return None
    at = stored_time(now)
    with session.begin_nested() as savepoint:
        connection = session.connection()  # emits the SAVEPOINT
        inserted = _values_insert(dialect)(connection, [(*v[:3], at, *v[4:]) for v in values])
        if len(inserted) != len(values):  # a repeat, within the facts or of a stored event
            savepoint.rollback()
            return None
        add_stat_rows(
            connection,
            counted_stat_rows(Counter((v[0], v[1], v[8] is not None, bool(v[10])) for v in values)),
        )
    observability.notify(
        RECORD_EVENTS,
        perf_counter() - started,
        {"session": session, "outcome_counts": Counter((RecordStatus.RECORDED, v[1], v[6]) for v in values)},
    )
    return [inserted[(v[0], v[1], v[4], v[5])] for v in values]


def _with_references_checked(
    connection: Connection, values: list[tuple], archivable: list[EventKey]
) -> list[tuple] | None:
    """``values`` with events in private tournaments made private.

    ``None`` if a player or tournament is unknown or one of the ``archivable``
    keys is in cold storage already.
    """
    player_ids = sorted({v[0] for v in values})
    tournament_ids = sorted({v[9] for v in values if v[9] is not None})
    known_players, private, archived = _lookup_references(connection, player_ids, tournament_ids, archivable)
    if archived or len(known_players) != len(player_ids) or len(private) != len(tournament_ids):
        return None
    if not any(private.values()):
        return values
    made_private = _private_value(connection.dialect)
    return [
        (*v[:10], made_private, *v[11:]) if v[9] is not None and private[v[9]] and not v[10] else v
        for v in values
    ]


@lru_cache(maxsize=8)
def _private_value(dialect: Dialect) -> Any:
    column = ActivityEvent.__table__.c.is_private
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process(True) if process else True


def _members_at_the_time(connection: Connection, values: list[tuple]) -> bool:
    """Whether every team event's player was a member of its team when it happened."""
    team_events = [v for v in values if v[8] is not None]
    if not team_events:
        return True
    # Interval ends converted as event times are, so the driver's values compare as the times do.
    stored_time, as_stored = _stored_time(connection.dialect), _driver_time(connection.dialect)
    spans = _membership_spans(
        connection, {(v[8], v[0]) for v in team_events}, lambda value: as_stored(stored_time(value))
    )
    return all(_was_member(spans, v[8], v[0], v[2]) for v in team_events)


def _record_checked(session: Session, checked: CheckedFacts) -> BatchOutcome:
    if not checked.rows:
        return BatchOutcome([])
    if session.autoflush:
        # The checks below read through the session's connection, which does not
        # flush pending objects as session queries would.
        session.flush()
    connection = session.connection()
    now = utcnow()
    # The checks replace a row they complete (a reversal's team, a private
    # tournament's privacy) rather than change it: ``checked`` stays as it was.
    rows, keys = list(checked.rows), checked.keys
    try:
        _check_derived_fields(session, rows)
    except Invalid:
        # An unknown player or tournament is the first thing wrong with a fact.
        _check_references(connection, rows, keys, now)
        raise
    inserted: dict[EventKey, int] = {}
    # The first test spares a live result building a set of its one or two keys.
    if len(rows) <= _FEW_ROWS or len(set(keys)) <= _FEW_ROWS:
        # A live result: its insert checks the references itself (see _insert_few).
        inserted = _insert_few(
            connection, [row for _key, row in sorted(_first_by_key(keys, rows).items(), key=itemgetter(0))], now
        )
        if len(inserted) == len(rows):
            return BatchOutcome([RecordOutcome(key, RecordStatus.RECORDED, inserted[key]) for key in keys])
    # What is left is a batch, or a few facts of which some were not inserted:
    # an unknown reference (refused here, with nothing inserted), a repeat or
    # an archived fact.
    archived = _check_references(connection, rows, keys, now)
    first_by_key = _first_by_key(keys, rows)
    inserted.update(
        _insert_and_count(
            connection,
            [
                row
                for key, row in sorted(first_by_key.items(), key=itemgetter(0))
                if key not in archived and key not in inserted
            ],
            now,
        )
    )

    if len(inserted) == len(rows):  # every fact new: the common case, nothing to compare
        return BatchOutcome([RecordOutcome(key, RecordStatus.RECORDED, inserted[key]) for key in keys])
    repeated_keys = set(keys) - inserted.keys() - archived.keys()
    stored = _stored_payloads(session, repeated_keys) if repeated_keys else {}
    outcomes: list[RecordOutcome] = []
    claimed: set[EventKey] = set()
    for key, row in zip(keys, rows, strict=True):
        if key in inserted and key not in claimed:
            claimed.add(key)
            outcomes.append(RecordOutcome(key, RecordStatus.RECORDED, inserted[key]))
            continue
        if key in archived:
            # Its payload is in cold storage: a repeat of an archived fact is a duplicate.
            outcomes.append(RecordOutcome(key, RecordStatus.DUPLICATE, archived[key]))
            continue
        if key in inserted:  # a repeat within this batch of a row just inserted
            event_id, payload = inserted[key], _payload(first_by_key[key])
        else:
            event_id, payload = stored[key]
        differences = _differences(payload, _payload(row))
        if differences:
            _record_conflict(session, event_id, row, differences, now)
            outcomes.append(RecordOutcome(key, RecordStatus.CONFLICT, event_id))
        else:
            outcomes.append(RecordOutcome(key, RecordStatus.DUPLICATE, event_id))
    return BatchOutcome(outcomes)


def _validated_row(fact: NewEvent) -> dict[str, Any]:
    (player_id, event_type, occurred_at, source_model, source_id, origin, origin_id, team_id,
     tournament_id, is_private, metadata, reverses_event_id) = fact
    kind = lookup_event_type(event_type)
    if player_id.__class__ is not int and (not isinstance(player_id, int) or isinstance(player_id, bool)):
        raise Invalid(f"{event_type}: player_id must be an integer, not {player_id!r}")
    if origin not in ORIGINS:
        raise Invalid(f"{_where(fact)}: unknown origin {origin!r}; known: {', '.join(ORIGINS)}")
    if not isinstance(occurred_at, datetime) or occurred_at.tzinfo is None:
        raise Invalid(f"{_where(fact)}: occurred_at must be a timezone-aware datetime")
    if not source_model or not isinstance(source_id, int):
        raise Invalid(f"{_where(fact)}: a source model name and integer source id are required")
    if (kind.reverses is None) != (reverses_event_id is None):
        raise Invalid(
            f"{_where(fact)}: reverses_event_id is required for reversals and only for them"
        )
    metadata = kind.validate_metadata(metadata)
    if event_type == "tournament_won" and metadata["is_team_win"] != (team_id is not None):
        raise Invalid(f"{_where(fact)}: is_team_win must be true exactly when team_id is set")
    return {
        "player_id": player_id,
        "event_type": event_type,
        "occurred_at": occurred_at,
        "source_model": source_model,
        "source_id": source_id,
        "origin": origin,
        "origin_id": origin_id,
        "team_id": team_id,
        "tournament_id": tournament_id,
        "is_private": bool(is_private),
        "metadata": metadata,
        "reverses_event_id": reverses_event_id,
    }


def _first_by_key(keys: Sequence[EventKey], rows: Sequence[Mapping[str, Any]]) -> dict[EventKey, Mapping[str, Any]]:
    """The first row of each key: the one written; later repeats in the call are compared with it."""
    first_by_key: dict[EventKey, Mapping[str, Any]] = {}
    for key, row in zip(keys, rows, strict=True):
        first_by_key.setdefault(key, row)
    return first_by_key


def _where(fact: NewEvent) -> str:
    return f"{fact.event_type} for player {fact.player_id}"


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _check_references(
    connection: Connection, rows: list[Mapping[str, Any]], keys: Sequence[EventKey], now: datetime
) -> dict[EventKey, int]:
    """Check every referenced player and tournament exists; derive privacy from the tournament.

    A row that becomes private is replaced in ``rows`` by a private copy.

    Return the archived event id of each row whose fact is already in cold
    storage. Archival takes only events older than YOUNGEST_ARCHIVABLE, so
    only such facts are looked up: live results, which happen now, are not;
    nor is anything while the archive holds no key (a backfill's thousands of
    keys would otherwise be sent with every batch to match nothing).
    """
    player_ids = sorted({row["player_id"] for row in rows})
    tournament_ids = sorted({row["tournament_id"] for row in rows if row["tournament_id"] is not None})
    youngest = now - YOUNGEST_ARCHIVABLE
    archivable = sorted({key for key, row in zip(keys, rows, strict=True) if row["occurred_at"] < youngest})
    if len(archivable) > _FEW_ROWS and not run_on_driver(connection, _ANY_ARCHIVED_KEY):
        archivable = []
    known_players, private, archived = _lookup_references(
        connection, player_ids, tournament_ids, archivable
    )
    missing = [pid for pid in player_ids if pid not in known_players]
    if missing:
        raise Invalid(f"unknown player id(s): {', '.join(map(str, missing[:10]))}")
    missing = [tid for tid in tournament_ids if tid not in private]
    if missing:
        raise Invalid(f"unknown tournament id(s): {', '.join(map(str, missing[:10]))}")
    for i, row in enumerate(rows):
        # A reversal keeps its original's privacy (_check_reversals), so that
        # its deltas cancel the original's exactly.
        tournament_id = row["tournament_id"]
        if (tournament_id is not None and private[tournament_id] and not row["is_private"]
                and row["reverses_event_id"] is None):
            rows[i] = {**row, "is_private": True}
    return archived


def _check_derived_fields(session: Session, rows: list[Mapping[str, Any]]) -> None:
    """Check reversals and team events.

    A reversal's row is replaced in ``rows`` by a copy with its original's
    team, tournament and privacy.
    """
    reversals = [i for i, row in enumerate(rows) if row["reverses_event_id"] is not None]
    if reversals:
        _check_reversals(session, rows, reversals)
    _check_team_membership(session, [row for row in rows if row["team_id"] is not None])


def _lookup_references(
    connection: Connection, player_ids: list[int], tournament_ids: list[int], keys: list[EventKey]
) -> tuple[set[int], dict[int, bool], dict[EventKey, int]]:
    """Return which players exist, the privacy of the tournaments that do, and which keys are archived.

    All three are read by one statement (per chunk), written out for the
    driver: for a single event the lookup is one of only four statements, and
    the dialect's expanding IN parameters cost more than the lookup itself.
    """
    known_players: set[int] = set()
    private: dict[int, bool] = {}
    archived: dict[EventKey, int] = {}
    postgres = connection.dialect.name == "postgresql"
    for start in range(0, max(len(player_ids), len(tournament_ids), len(keys)), _CHUNK):
        players = player_ids[start : start + _CHUNK]
        tournaments = tournament_ids[start : start + _CHUNK]
        chunk_keys = keys[start : start + _CHUNK]
        if postgres and max(len(players), len(tournaments), len(chunk_keys)) > _FEW_ROWS:
            sql = _POSTGRES_REFERENCES + (_POSTGRES_ARCHIVED_KEYS if chunk_keys else "")
            params = {"players": players, "tournaments": tournaments,
                      **{name: [key[i] for key in chunk_keys] for i, name in enumerate(_KEY_ARRAYS)}}
        else:
            mark = "%s" if postgres else "?"
            sql = _listed_references(mark, len(players), len(tournaments), len(chunk_keys))
            params = (*players, *tournaments, *(part for key in chunk_keys for part in key))
        for kind, record_id, is_private, *key in run_on_driver(connection, sql, params):
            if kind == 1:
                private[record_id] = bool(is_private)
            elif kind == 0:
                known_players.add(record_id)
            else:
                archived[tuple(key)] = record_id
    return known_players, private, archived


_POSTGRES_REFERENCES = (
    "SELECT 0, id, false, NULL::bigint, NULL::varchar, NULL::varchar, NULL::bigint FROM players "
    "WHERE id = ANY(%(players)b::bigint[]) UNION ALL "
    "SELECT 1, id, is_private, NULL, NULL, NULL, NULL FROM tournaments "
    "WHERE id = ANY(%(tournaments)b::bigint[])"
)
_KEY_ARRAYS = ("key_players", "key_types", "key_models", "key_sources")
_ANY_ARCHIVED_KEY = "SELECT 1 FROM archived_event_keys LIMIT 1"
_POSTGRES_ARCHIVED_KEYS = (
    " UNION ALL SELECT 2, event_id, NULL, player_id, event_type, source_model, source_id "
    "FROM archived_event_keys WHERE (player_id, event_type, source_model, source_id) IN "
    "(SELECT * FROM unnest(%(key_players)b::bigint[], %(key_types)b::text[], "
    "%(key_models)b::text[], %(key_sources)b::bigint[]))"
)


@lru_cache(maxsize=64)
def _listed_references(mark: str, players: int, tournaments: int, keys: int) -> str:
    def listed(n: int, width: int = 1) -> str:
        if not n:
            return "NULL"
        one = mark if width == 1 else f"({', '.join([mark] * width)})"
        return ", ".join([one] * n)

    sql = (
        # Typed NULLs: PostgreSQL settles each column's type from the first SELECT.
        "SELECT 0, id, CAST(NULL AS BOOLEAN), CAST(NULL AS BIGINT), CAST(NULL AS VARCHAR), "
        "CAST(NULL AS VARCHAR), CAST(NULL AS BIGINT) "
        f"FROM players WHERE id IN ({listed(players)}) "
        f"UNION ALL SELECT 1, id, is_private, NULL, NULL, NULL, NULL FROM tournaments "
        f"WHERE id IN ({listed(tournaments)})"
    )
    if keys:
        # A join on the key, not a row-value IN (VALUES ...): SQLite answers the
        # IN form by scanning every archived key, a cost that grows with the archive.
        sql += (
            " UNION ALL SELECT 2, a.event_id, NULL, a.player_id, a.event_type, a.source_model, a.source_id "
            f"FROM (VALUES {listed(keys, 4)}) AS k JOIN archived_event_keys AS a "
            "ON a.player_id = k.column1 AND a.event_type = k.column2 "
            "AND a.source_model = k.column3 AND a.source_id = k.column4"
        )
    return sql


def _check_reversals(session: Session, rows: list[Mapping[str, Any]], reversals: list[int]) -> None:
    """Each reversal (``rows[i]``, ``i`` in ``reversals``) undoes one stored event.

    The event must be of the reversal's original type and the same player's.

    It takes team, tournament and privacy from the original so that its deltas
    cancel the original's exactly: its row is replaced by a copy with them.
    """
    ids = sorted({rows[i]["reverses_event_id"] for i in reversals})
    originals: dict[int, ActivityEvent] = {}
    for chunk in _chunks(ids):
        originals.update(
            (event.id, event)
            for event in session.scalars(select(ActivityEvent).where(ActivityEvent.id.in_(chunk)))
        )
    already_reversed = {}
    for chunk in _chunks(ids):
        for original_id, reversal_id in session.execute(
            select(ActivityEvent.reverses_event_id, ActivityEvent.id).where(
                ActivityEvent.reverses_event_id.in_(chunk)
            )
        ):
            already_reversed[original_id] = reversal_id
    for i in reversals:
        row = rows[i]
        original = originals.get(row["reverses_event_id"])
        where = f"{row['event_type']} for player {row['player_id']}"
        if original is None:
            raise Invalid(f"{where}: event {row['reverses_event_id']} to reverse does not exist")
        expected_type = lookup_event_type(row["event_type"]).reverses
        if original.event_type != expected_type or original.player_id != row["player_id"]:
            raise Invalid(
                f"{where}: event {original.id} is a {original.event_type} of player "
                f"{original.player_id}, not a {expected_type} of this player"
            )
        reversal_key = _row_key(row)
        if original.id in already_reversed:
            existing = session.get(ActivityEvent, already_reversed[original.id])
            if existing is None or _event_key(existing) != reversal_key:
                raise Invalid(f"{where}: event {original.id} was already reversed by event "
                              f"{already_reversed[original.id]}")
        rows[i] = {
            **row,
            "team_id": original.team_id,
            "tournament_id": original.tournament_id,
            "is_private": original.is_private,
        }


def _check_team_membership(session: Session, rows: list[Mapping[str, Any]]) -> None:
    if not rows:
        return
    connection = session.connection()
    spans = _membership_spans(
        connection, {(row["team_id"], row["player_id"]) for row in rows}, _stored_time(connection.dialect)
    )
    for row in rows:
        if not _was_member(spans, row["team_id"], row["player_id"], row["occurred_at"]):
            raise Invalid(
                f"{row['event_type']} for player {row['player_id']}: not a member of team "
                f"{row['team_id']} at {row['occurred_at'].isoformat()}"
            )


Span = tuple[Any, Any]  # (joined_at, left_at or None), as times or as the driver's values of them


def _membership_spans(
    connection: Connection, pairs: Iterable[tuple[int, int]], convert: Callable[[Any], Any]
) -> dict[tuple[int, int], list[Span]]:
    """The membership intervals of the ``(team_id, player_id)`` pairs, their ends passed through ``convert``.

    Written out for the driver: a batch's thousands of pairs give a statement of
    a new length every time, which SQLAlchemy would compile afresh each time.
    """
    mark = "%s" if connection.dialect.name == "postgresql" else "?"
    spans: dict[tuple[int, int], list[Span]] = {}
    for chunk in _chunks(sorted(pairs), _CHUNK // 2):
        for team_id, player_id, joined_at, left_at in run_on_driver(
            connection, _membership_sql(mark, len(chunk)), tuple(chain.from_iterable(chunk))
        ):
            spans.setdefault((team_id, player_id), []).append(
                (convert(joined_at), None if left_at is None else convert(left_at))
            )
    return spans


@lru_cache(maxsize=64)
def _membership_sql(mark: str, pairs: int) -> str:
    # A join on a VALUES list, which searches the membership index (see _by_keys_statement).
    listed = ", ".join([f"({mark}, {mark})"] * pairs)
    return (
        "SELECT m.team_id, m.player_id, m.joined_at, m.left_at "
        f"FROM (VALUES {listed}) AS k JOIN team_memberships AS m "
        "ON m.team_id = k.column1 AND m.player_id = k.column2"
    )


def _was_member(spans: Mapping[tuple[int, int], list[Span]], team_id: int, player_id: int, at: Any) -> bool:
    return any(
        joined <= at and (left is None or at < left) for joined, left in spans.get((team_id, player_id), ())
    )


@lru_cache(maxsize=8)
def _stored_time(dialect: Dialect) -> Callable[[Any], Any]:
    """Turn a time as the driver returns it into the aware datetime the models give."""
    column = TeamMembership.__table__.c.joined_at
    return column.type.dialect_impl(dialect).result_processor(dialect, None) or (lambda value: value)


def _insert_and_count(connection: Connection, rows: list[Mapping[str, Any]], now: datetime) -> dict[EventKey, int]:
    """Insert rows whose key is not stored yet and add the stat deltas of those inserted.

    Return the keys and ids of the rows inserted.
    """
    if not rows:  # every fact was archived or inserted already
        return {}
    inserted = _event_insert(connection.dialect)(connection, rows, now)
    _add_deltas_of_inserted(connection, rows, inserted)
    return inserted


def _add_deltas_of_inserted(
    connection: Connection, rows: list[Mapping[str, Any]], inserted: Mapping[EventKey, int]
) -> None:
    """Add the stat deltas of the rows whose key was inserted."""
    add_stat_rows(
        connection,
        counted_stat_rows(
            Counter(
                (row["player_id"], row["event_type"], row["team_id"] is not None, row["is_private"])
                for row in rows
                if _row_key(row) in inserted
            )
        ),
    )


def _insert_few(connection: Connection, rows: list[Mapping[str, Any]], now: datetime) -> dict[EventKey, int]:
    """Insert a few rows (sorted by key) with their stats, if every player and tournament they name exists.

    A live result is one or two events, for which looking the references up
    first would be a statement of its own. Instead the insert checks them: it
    inserts nothing unless all exist, derives each row's privacy from its
    tournament, leaves out facts already in cold storage and, like every
    insert, repeats. Rows it leaves out go the general way, which names what
    is unknown. The stat deltas of the rows inserted are added in the same
    statement on PostgreSQL (a data-modifying CTE: one round trip), by a
    second one on SQLite.

    Return the keys and ids of the rows inserted.
    """
    dialect = connection.dialect
    youngest = now - YOUNGEST_ARCHIVABLE
    archivable = any(row["occurred_at"] < youngest for row in rows)
    values = [
        # The tournament a row takes privacy from: none for a reversal, which keeps its original's.
        (*row_values, row["tournament_id"] if row["reverses_event_id"] is None else None)
        for row, row_values in zip(rows, _event_values(dialect)(rows, now), strict=True)
    ]
    # Copies: the stored privacy is set on them for the stats, not on the caller's rows.
    by_key = {_row_key(row): dict(row) for row in rows}
    if dialect.name == "postgresql":
        deltas = [
            (row["player_id"], row["event_type"], row["source_model"], row["source_id"], *scope_and_vector)
            for row in rows
            for _player, *scope_and_vector in counted_stat_rows(
                {(row["player_id"], row["event_type"], row["team_id"] is not None, False): 1}
            )
        ]
        sql = _insert_few_sql("postgresql", len(values), archivable, len(deltas))
        parameters = (*chain.from_iterable(values), *chain.from_iterable(deltas), now)
    else:
        sql = _insert_few_sql(dialect.name, len(values), archivable, 0)
        parameters = tuple(chain.from_iterable(values))
    inserted: dict[EventKey, int] = {}
    for event_id, *key, is_private in run_on_driver(connection, sql, parameters):
        key = tuple(key)
        inserted[key] = event_id
        by_key[key]["is_private"] = bool(is_private)
    if dialect.name != "postgresql" and inserted:
        _add_deltas_of_inserted(connection, list(by_key.values()), inserted)
    return inserted


@lru_cache(maxsize=64)
def _insert_few_sql(dialect_name: str, events: int, archivable: bool, delta_rows: int) -> str:
    """The statement of ``_insert_few``; with ``delta_rows`` (PostgreSQL), the stats upsert rides in it."""
    postgres = dialect_name == "postgresql"
    mark = "%s" if postgres else "?"
    width = len(_INSERT_COLUMNS) + 1  # the columns, then the tournament privacy is taken from
    names = [f"c{i}" for i in range(width)]
    if postgres:
        # Typed by the first row: PostgreSQL settles a VALUES list's column types from it.
        first = "(" + ", ".join(f"{mark}::{cast}" for cast in (*_POSTGRES_EVENT_TYPES, "bigint")) + ")"
    else:
        first = "(" + ", ".join([mark] * width) + ")"
    other = "(" + ", ".join([mark] * width) + ")"
    column = dict(zip(_INSERT_COLUMNS, names, strict=False))  # in the CTE ``v``
    selected = [f"v.{column[name]}" for name in _INSERT_COLUMNS]
    selected[_INSERT_COLUMNS.index("is_private")] = (
        f"(v.{column['is_private']} OR COALESCE("
        f"(SELECT t.is_private FROM tournaments AS t WHERE t.id = v.{names[-1]}), FALSE))"
    )
    insert = (
        f"INSERT INTO activity_events ({', '.join(_INSERT_COLUMNS)}) SELECT {', '.join(selected)} FROM v "
        # Nothing unless every row's player and tournament exist.
        f"WHERE NOT EXISTS (SELECT 1 FROM v AS w WHERE "
        f"NOT EXISTS (SELECT 1 FROM players AS p WHERE p.id = w.{column['player_id']}) "
        f"OR (w.{column['tournament_id']} IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM tournaments AS t WHERE t.id = w.{column['tournament_id']})))"
    )
    if archivable:
        insert += (
            " AND NOT EXISTS (SELECT 1 FROM archived_event_keys AS a "
            f"WHERE a.player_id = v.{column['player_id']} AND a.event_type = v.{column['event_type']} "
            f"AND a.source_model = v.{column['source_model']} AND a.source_id = v.{column['source_id']})"
        )
    # The rows come sorted by key and are inserted in that order, like every insert of events.
    insert += _ON_CONFLICT_RETURNING + ", is_private"
    rows = f"v ({', '.join(names)}) AS (VALUES {', '.join([first] + [other] * (events - 1))})"
    if not postgres:
        return f"WITH {rows} {insert}"
    stat_columns = [f"s{i}" for i in range(len(STAT_NAMES))]
    first_delta = "(%s::bigint, %s::text, %s::text, %s::bigint, %s::text, " + ", ".join(
        ["%s::integer"] * len(STAT_NAMES)
    ) + ")"
    other_delta = "(" + ", ".join(["%s"] * (5 + len(STAT_NAMES))) + ")"
    sums = ", ".join(f"SUM(d.{c})" for c in stat_columns)
    return (
        f"WITH {rows}, ins AS ({insert}), "
        f"d (player_id, event_type, source_model, source_id, scope, {', '.join(stat_columns)}) "
        f"AS (VALUES {', '.join([first_delta] + [other_delta] * (delta_rows - 1))}), "
        f"st AS (INSERT INTO player_stats ({', '.join(STATS_UPSERT_COLUMNS)}) "
        f"SELECT d.player_id, d.scope, {sums}, %s::timestamptz FROM d JOIN ins "
        "ON ins.player_id = d.player_id AND ins.event_type = d.event_type "
        "AND ins.source_model = d.source_model AND ins.source_id = d.source_id "
        # A private event counts in the ``all`` scope only.
        "WHERE d.scope = 'all' OR NOT ins.is_private "
        "GROUP BY d.player_id, d.scope ORDER BY d.player_id, d.scope" + STATS_UPSERT_CONFLICT + ") "
        "SELECT id, player_id, event_type, source_model, source_id, is_private FROM ins"
    )


# The columns recording writes, in the order the insert statements bind them.
_INSERT_COLUMNS = (
    "player_id", "event_type", "occurred_at", "recorded_at", "source_model", "source_id", "origin",
    "origin_id", "team_id", "tournament_id", "is_private", "metadata", "reverses_event_id",
)
# Their types on PostgreSQL, for parameters that do not go straight into the table.
_POSTGRES_EVENT_TYPES = (
    "bigint", "text", "timestamptz", "timestamptz", "text", "bigint", "text", "bigint",
    "bigint", "bigint", "boolean", "jsonb", "bigint",
)
_PROCESSED_COLUMNS = ("occurred_at", "recorded_at", "is_private", "metadata")
_ON_CONFLICT_RETURNING = (
    " ON CONFLICT (player_id, event_type, source_model, source_id) DO NOTHING"
    " RETURNING id, player_id, event_type, source_model, source_id"
)
# Rows per SQLite statement: 13 parameters each stays far below its variable limit.
_SQLITE_ROWS_PER_INSERT = 500
# Up to this many rows PostgreSQL gets plain VALUES lists, with the stats upsert in
# the same statement: for one event, adapting a dozen one-element arrays costs
# psycopg more than the statement itself.
_FEW_ROWS = 8

_EventInsert = Callable[[Connection, list[Mapping[str, Any]], datetime], dict[EventKey, int]]


@lru_cache(maxsize=8)
def _event_values(
    dialect: Dialect, *, metadata_as_text: bool = False
) -> Callable[[list[Mapping[str, Any]], datetime], list[tuple]]:
    """Build the conversion of event rows to driver values in ``_INSERT_COLUMNS`` order.

    Values go through the columns' own bind processors (or, for SQLite times, a
    checked equivalent). On PostgreSQL the metadata processor gives psycopg's
    ``Jsonb`` wrapper, which psycopg writes out when the statement runs;
    ``metadata_as_text`` writes it out here instead, as plain text that
    crosses a process boundary many times quicker than the wrapper.
    """
    table = ActivityEvent.__table__
    processors = {
        name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
        for name in _PROCESSED_COLUMNS
    }
    for name in set(_INSERT_COLUMNS) - set(_PROCESSED_COLUMNS):
        if table.c[name].type.dialect_impl(dialect).bind_processor(dialect) is not None:
            raise RuntimeError(f"activity_events.{name} needs a bind processor the insert does not apply")
    occurred = recorded = _driver_time(dialect)
    private, metadata = processors["is_private"], processors["metadata"]
    if dialect.name == "sqlite":
        metadata = quicker_json_text(metadata)
    elif metadata_as_text:
        metadata = quicker_json_text(json.dumps)

    def values(rows: list[Mapping[str, Any]], now: datetime) -> list[tuple]:
        at = recorded(now)
        return [
            (
                r["player_id"], r["event_type"], occurred(r["occurred_at"]), at, r["source_model"],
                r["source_id"], r["origin"], r["origin_id"], r["team_id"], r["tournament_id"],
                private(r["is_private"]), metadata(r["metadata"]), r["reverses_event_id"],
            )
            for r in rows
        ]

    return values


@lru_cache(maxsize=8)
def _driver_time(dialect: Dialect) -> Callable[[datetime], Any]:
    """Convert an aware time as the event columns' bind processor does (on SQLite, a checked equivalent)."""
    column = ActivityEvent.__table__.c.occurred_at
    process = column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    return quicker_sqlite_time(process) if dialect.name == "sqlite" else process


@lru_cache(maxsize=8)
def _event_insert(dialect: Dialect) -> _EventInsert:
    """The idempotent insert of event rows for ``dialect``: their values converted, then ``_values_insert``."""
    values, insert = _event_values(dialect), _values_insert(dialect)

    def insert_rows(connection: Connection, rows: list[Mapping[str, Any]], now: datetime) -> dict[EventKey, int]:
        return insert(connection, values(rows, now))

    return insert_rows


@lru_cache(maxsize=8)
def _values_insert(dialect: Dialect) -> Callable[[Connection, list[tuple]], dict[EventKey, int]]:
    """Build the idempotent insert of event values (converted, ``_INSERT_COLUMNS`` order) for ``dialect``.

    The statements are written out once per dialect and run through the driver,
    with values the columns' own bind processors converted (``_event_values``): SQLAlchemy's
    per-row parameter handling (and, on PostgreSQL, psycopg parsing a multi-row
    VALUES list of thousands of placeholders) cost more than the insert itself.
    On PostgreSQL the rows go as one array per column in a single statement.
    """
    columns = ", ".join(_INSERT_COLUMNS)

    def listed(mark: str) -> Callable[[int], str]:
        row = "(" + ", ".join([mark] * len(_INSERT_COLUMNS)) + ")"

        @lru_cache(maxsize=8)
        def statement(n: int) -> str:
            return f"INSERT INTO activity_events ({columns}) VALUES " + ", ".join([row] * n) + (
                _ON_CONFLICT_RETURNING
            )

        return statement

    if dialect.name == "postgresql":
        arrays = ", ".join(f"%(c{i})b::{cast}[]" for i, cast in enumerate(_POSTGRES_EVENT_TYPES))
        names = ", ".join(f"c{i}" for i in range(len(_POSTGRES_EVENT_TYPES)))
        # WITH ORDINALITY ... ORDER BY keeps the key order the caller sorted the rows in.
        sql = (
            f"INSERT INTO activity_events ({columns}) SELECT {names} "
            f"FROM unnest({arrays}) WITH ORDINALITY AS g({names}, n) ORDER BY g.n"
            + _ON_CONFLICT_RETURNING
        )

        def insert(connection: Connection, given: list[tuple]) -> dict[EventKey, int]:
            result = run_on_driver(
                connection, sql, {f"c{i}": list(column) for i, column in enumerate(zip(*given))}
            )
            return {(r[1], r[2], r[3], r[4]): r[0] for r in result}

        return insert
    if dialect.name != "sqlite":  # pragma: no cover - only the two supported databases reach here
        raise RuntimeError(f"unsupported database dialect {dialect.name!r}")
    statement = listed("?")

    def insert(connection: Connection, given: list[tuple]) -> dict[EventKey, int]:
        inserted: dict[EventKey, int] = {}
        for chunk in _chunks(given, _SQLITE_ROWS_PER_INSERT):
            flat = tuple(chain.from_iterable(chunk))
            for r in run_on_driver(connection, statement(len(chunk)), flat):
                inserted[(r[1], r[2], r[3], r[4])] = r[0]
        return inserted

    return insert


_KEY_NAMES = ("player_id", "event_type", "source_model", "source_id")
_STORED_COLUMNS = ("id", *_KEY_NAMES, *_PAYLOAD_FIELDS)


def _stored_payloads(session: Session, keys: set[EventKey]) -> dict[EventKey, tuple[int, dict[str, Any]]]:
    table = ActivityEvent.__table__
    found: dict[EventKey, tuple[int, dict[str, Any]]] = {}
    for chunk in _chunks(sorted(keys), _CHUNK // 4):
        for row in _select_by_keys(session, table, _KEY_NAMES, _STORED_COLUMNS, chunk).mappings():
            found[(row["player_id"], row["event_type"], row["source_model"], row["source_id"])] = (
                row["id"],
                _payload(row),
            )
    return found


def _select_by_keys(
    session: Session, table: Table, key_names: tuple[str, ...], selected: tuple[str, ...], keys: Sequence[tuple]
) -> Result:
    """Select the ``selected`` columns of the rows of ``table`` whose ``key_names`` are among ``keys``."""
    parameters = {f"k{i}_{j}": value for i, key in enumerate(keys) for j, value in enumerate(key)}
    return session.execute(_by_keys_statement(table, key_names, selected, len(keys)), parameters)


@lru_cache(maxsize=64)
def _by_keys_statement(table: Table, key_names: tuple[str, ...], selected: tuple[str, ...], count: int):
    """The statement of ``_select_by_keys`` for ``count`` keys: a join on a VALUES list of them.

    A join, not ``tuple_(*columns).in_(keys)``: SQLite answers a row-value IN
    by scanning the whole table, for every statement (a repeated live result
    scanned every stored event), where the join searches the key's index. It
    is written out once per size: SQLAlchemy compiles a VALUES construct afresh
    for every statement, which cost more than the lookup. Both databases name
    a VALUES list's columns column1, column2, ...
    """
    listed = ", ".join(
        "(" + ", ".join(f":k{i}_{j}" for j in range(len(key_names))) + ")" for i in range(count)
    )
    joined = " AND ".join(f"t.{name} = k.column{j + 1}" for j, name in enumerate(key_names))
    return text(
        f"SELECT {', '.join(f't.{name}' for name in selected)} "
        f"FROM (VALUES {listed}) AS k JOIN {table.name} AS t ON {joined}"
    ).columns(*(table.c[name] for name in selected))


def _row_key(row: Mapping[str, Any]) -> EventKey:
    return (row["player_id"], row["event_type"], row["source_model"], row["source_id"])


def _event_key(event: ActivityEvent) -> EventKey:
    return (event.player_id, event.event_type, event.source_model, event.source_id)


def _payload(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in _PAYLOAD_FIELDS}


def _differences(stored: Mapping[str, Any], attempted: Mapping[str, Any]) -> list[str]:
    return [name for name in _PAYLOAD_FIELDS if not _same(stored[name], attempted[name])]


def _same(stored: Any, attempted: Any) -> bool:
    # Equal values of one type are the same; only the rest (times in other
    # zones, 1 against 1.0) need their canonical forms compared. A repeated
    # backfill compares six fields of every event it finds already stored.
    if type(stored) is type(attempted) and stored == attempted:
        return True
    return _canonical(stored) == _canonical(attempted)


def _canonical(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return json.dumps(value, sort_keys=True, default=str)


def _record_conflict(
    session: Session, event_id: int, row: Mapping[str, Any], differences: list[str], now: datetime
) -> None:
    attempted = {
        **{k: row[k] for k in ("event_type", "source_model", "source_id", "origin", "origin_id")},
        **{k: row[k] for k in _PAYLOAD_FIELDS},
        "occurred_at": row["occurred_at"].isoformat(),
    }
    fingerprint = hashlib.sha256(
        json.dumps({"event_id": event_id, **attempted}, sort_keys=True, default=str).encode()
    ).hexdigest()
    table = DataQualityFinding.__table__
    session.execute(
        dialect_insert(session, table)
        .values(
            kind="event_conflict",
            detected_at=now,
            event_id=event_id,
            player_id=row["player_id"],
            attempted=attempted,
            fingerprint=fingerprint,
            differences=differences,
        )
        .on_conflict_do_nothing(index_elements=[table.c.fingerprint])
    )
