"""Player stats as a projection of events: deltas applied, and the full recompute.

Stats rows change only through ``apply_stat_deltas``, which adds to the stored
values in the database (``column = column + delta``) so that concurrent writers
never lose each other's updates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

from webapp.database import run_on_driver
from webapp.domain.taxonomy import EVENT_TYPES
from webapp.models.base import quicker_sqlite_time, utcnow
from webapp.models.stats import STAT_NAMES, PlayerStats


@dataclass(frozen=True)
class ProjectedEvent:
    """The parts of an event that decide its stat deltas."""

    player_id: int
    event_type: str
    is_team: bool
    is_private: bool


StatKey = tuple[int, str]  # (player_id, scope)
# (player_id, event_type, is_team, is_private): all that decides an event's deltas.
DeltaKey = tuple[int, str, bool, bool]


def stat_deltas(events: Iterable[ProjectedEvent], sign: int = 1) -> dict[StatKey, dict[str, int]]:
    """Sum the stat deltas of ``events`` per player and scope.

    Every event counts in the ``all`` scope; only non-private ones in ``public``.
    ``sign=-1`` gives the deltas that take the events back out.
    """
    return counted_stat_deltas(
        Counter((e.player_id, e.event_type, e.is_team, e.is_private) for e in events), sign
    )


def counted_stat_deltas(counts: Mapping[DeltaKey, int], sign: int = 1) -> dict[StatKey, dict[str, int]]:
    """Sum the stat deltas of events counted per (player, event type, is_team, is_private).

    Every player and scope an event reaches gets a row, even when its deltas are zero.
    """
    return {key: dict(zip(STAT_NAMES, row)) for key, row in _counted_totals(counts, sign).items()}


def counted_stat_rows(counts: Mapping[DeltaKey, int], sign: int = 1) -> list[tuple]:
    """``counted_stat_deltas`` as rows ``(player_id, scope, *STAT_NAMES)``, in ``add_stat_rows`` order."""
    return [(*key, *row) for key, row in sorted(_counted_totals(counts, sign).items())]


def _counted_totals(counts: Mapping[DeltaKey, int], sign: int) -> dict[StatKey, list[int]]:
    width = len(STAT_NAMES)
    totals: dict[StatKey, list[int]] = {}
    for (player_id, event_type, is_team, is_private), n in counts.items():
        vector = _delta_vector(event_type, bool(is_team))
        for scope in _PRIVATE_SCOPES if is_private else _PUBLIC_SCOPES:
            row = totals.get((player_id, scope))
            if row is None:
                row = totals[(player_id, scope)] = [0] * width
            for i, delta in vector:
                row[i] += sign * n * delta
    return totals


_PRIVATE_SCOPES = ("all",)
_PUBLIC_SCOPES = ("all", "public")


@cache
def _delta_vector(event_type: str, is_team: bool) -> tuple[tuple[int, int], ...]:
    """The non-zero deltas of one event as (index in STAT_NAMES, delta) pairs."""
    deltas = EVENT_TYPES[event_type].deltas_for(is_team)
    return tuple((i, deltas[stat]) for i, stat in enumerate(STAT_NAMES) if deltas.get(stat))


def apply_stat_deltas(session: Session, deltas: Mapping[StatKey, Mapping[str, int]]) -> int:
    """Add ``deltas`` to the stored stats, creating rows as needed; return rows touched."""
    if not deltas:
        return 0
    return add_stat_deltas(session.connection(), deltas)


def add_stat_deltas(connection: Connection, deltas: Mapping[StatKey, Mapping[str, int]]) -> int:
    """Do what ``apply_stat_deltas`` does on the connection of a session's transaction."""
    return add_stat_rows(
        connection,
        [(player_id, scope, *[d.get(s, 0) for s in STAT_NAMES]) for (player_id, scope), d in sorted(deltas.items())],
    )


def add_stat_rows(connection: Connection, rows: list[tuple]) -> int:
    """Add rows of deltas ``(player_id, scope, *STAT_NAMES)`` to the stored stats; return rows touched.

    The rows must be sorted by player and scope: a fixed order keeps concurrent
    writers from deadlocking on each other's rows.
    """
    if not rows:
        return 0
    _stats_upsert(connection.dialect)(connection, rows, utcnow())
    return len(rows)


_FEW_ROWS = 8

#: The columns a stats upsert writes, and how a row that exists takes the deltas.
STATS_UPSERT_COLUMNS = ("player_id", "scope", *STAT_NAMES, "updated_at")
STATS_UPSERT_CONFLICT = (
    " ON CONFLICT (player_id, scope) DO UPDATE SET "
    + ", ".join(f"{s} = player_stats.{s} + excluded.{s}" for s in STAT_NAMES)
    + ", updated_at = excluded.updated_at"
)


def _listed_upsert(columns: str, conflict: str, mark: str) -> Callable[[int], str]:
    row = "(" + ", ".join([mark] * (len(STAT_NAMES) + 3)) + ")"

    @lru_cache(maxsize=_FEW_ROWS)
    def statement(n: int) -> str:
        return f"INSERT INTO player_stats ({columns}) VALUES " + ", ".join([row] * n) + conflict

    return statement


@lru_cache(maxsize=8)
def _stats_upsert(dialect: Dialect) -> Callable[[Connection, list[tuple], datetime], None]:
    """Build the upsert of stat rows ``(player_id, scope, *STAT_NAMES)`` for ``dialect``.

    The statement is written out once per dialect and run through the driver:
    SQLAlchemy's per-row parameter handling cost more than the upsert itself.
    On PostgreSQL the rows go as one array per column in a single statement.
    """
    table = PlayerStats.__table__
    stamp = table.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect)
    if stamp is not None:
        stamp = quicker_sqlite_time(stamp)
    for name in ("player_id", "scope", *STAT_NAMES):
        if table.c[name].type.dialect_impl(dialect).bind_processor(dialect) is not None:
            raise RuntimeError(f"player_stats.{name} needs a bind processor the upsert does not apply")
    columns = ", ".join(STATS_UPSERT_COLUMNS)
    conflict = STATS_UPSERT_CONFLICT
    if dialect.name == "postgresql":
        arrays = ", ".join(
            ["%(c0)b::bigint[]", "%(c1)b::text[]"]
            + [f"%(c{i + 2})b::integer[]" for i in range(len(STAT_NAMES))]
        )
        # WITH ORDINALITY ... ORDER BY keeps the rows' lock order the caller chose.
        sql = (
            f"INSERT INTO player_stats ({columns}) "
            f"SELECT {', '.join(f'g.c{i}' for i in range(len(STAT_NAMES) + 2))}, %(updated_at)s "
            f"FROM unnest({arrays}) WITH ORDINALITY AS g"
            f"({', '.join(f'c{i}' for i in range(len(STAT_NAMES) + 2))}, n) ORDER BY g.n" + conflict
        )

        few = _listed_upsert(columns, conflict, "%s")

        def upsert(connection: Connection, rows: list[tuple], now: datetime) -> None:
            at = stamp(now) if stamp else now
            if len(rows) <= _FEW_ROWS:
                # For one event's rows, adapting a dozen arrays costs psycopg more than the upsert.
                run_on_driver(connection, few(len(rows)), tuple(v for row in rows for v in (*row, at)))
                return
            params: dict[str, Any] = {f"c{i}": list(column) for i, column in enumerate(zip(*rows))}
            params["updated_at"] = at
            run_on_driver(connection, sql, params)

        return upsert
    if dialect.name != "sqlite":  # pragma: no cover - only the two supported databases reach here
        raise RuntimeError(f"unsupported database dialect {dialect.name!r}")
    sql = f"INSERT INTO player_stats ({columns}) VALUES ({', '.join(['?'] * (len(STAT_NAMES) + 3))})" + conflict
    few = _listed_upsert(columns, conflict, "?")

    def upsert(connection: Connection, rows: list[tuple], now: datetime) -> None:
        at = stamp(now) if stamp else now
        if len(rows) <= _FEW_ROWS:
            # One statement for one event's rows: a step of the driver's executemany costs as much.
            run_on_driver(connection, few(len(rows)), tuple(v for row in rows for v in (*row, at)))
            return
        run_on_driver(connection, sql, [(*row, at) for row in rows], many=True)

    return upsert


def _deltas_values_sql() -> str:
    """The delta table as SQL rows: (event_type, is_team, one column per stat)."""
    rows = []
    for event_type in EVENT_TYPES.values():
        for is_team in (0, 1):
            deltas = event_type.deltas_for(bool(is_team))
            values = ", ".join(str(deltas.get(stat, 0)) for stat in STAT_NAMES)
            rows.append(f"('{event_type.name}', {is_team}, {values})")
    return ",\n    ".join(rows)


def expected_stats_sql(extra_counts_sql: str = "", dialect: str | None = None) -> str:
    """SQL computing, per player and scope, the stats their events add up to.

    The events are first counted per (player, type, privacy, team-ness), then the
    counts are joined to the delta table, so the work grows with the number of
    events only in the counting. ``:player_id`` (NULL for everyone) limits it.
    The totals of archived events (``archived_event_counts``) are always
    counted with the hot events, so archival changes no expected stat.
    ``extra_counts_sql`` may add more rows of the same shape as the ``counts``
    CTE with a leading ``UNION ALL``. ``dialect``
    (``"sqlite"`` or ``"postgresql"``) picks the fastest counting for that
    database; without it the SQL runs well on both.
    """
    stat_columns = ", ".join(STAT_NAMES)
    sum_all = ",\n        ".join(f"SUM(c.n * d.{s}) AS {s}" for s in STAT_NAMES)
    everyone = _SQLITE_COUNTS_OF_EVERYONE if dialect == "sqlite" else _COUNTS_OF_EVERYONE
    return f"""
WITH deltas (event_type, is_team, {stat_columns}) AS (
    VALUES
    {_deltas_values_sql()}
),
counts AS (
    {everyone}
    UNION ALL
    {_COUNTS_OF_ONE_PLAYER}
    UNION ALL
    {_ARCHIVED_COUNTS}
    {extra_counts_sql}
),
expected AS (
    SELECT c.player_id, 'all' AS scope,
        {sum_all}
    FROM counts c JOIN deltas d ON d.event_type = c.event_type AND d.is_team = c.is_team
    GROUP BY c.player_id
    UNION ALL
    SELECT c.player_id, 'public' AS scope,
        {sum_all}
    FROM counts c JOIN deltas d ON d.event_type = c.event_type AND d.is_team = c.is_team
    WHERE c.is_private = 0
    GROUP BY c.player_id
)
"""


# Everyone's events and one player's are counted by separate branches, each
# reading nothing when ``:player_id`` says it is the other's turn: one player's
# events are then found through the index on player_id, and everyone's by
# reading the whole table once.
_PRIVATE = "CASE WHEN is_private THEN 1 ELSE 0 END"
_TEAM = "CASE WHEN team_id IS NULL THEN 0 ELSE 1 END"

_COUNTS_OF_ONE_PLAYER = f"""SELECT player_id, event_type, {_PRIVATE} AS is_private, {_TEAM} AS is_team, COUNT(*) AS n
    FROM activity_events
    WHERE player_id = :player_id
    GROUP BY 1, 2, 3, 4"""

# The unary plus keeps SQLite from grouping in the order of the idempotency
# key's index, which costs a random row lookup per event (3x slower than
# sorting); PostgreSQL hashes either way.
_COUNTS_OF_EVERYONE = f"""SELECT +player_id AS player_id, event_type, {_PRIVATE} AS is_private, {_TEAM} AS is_team,
           COUNT(*) AS n
    FROM activity_events
    WHERE CAST(:player_id AS BIGINT) IS NULL
    GROUP BY 1, 2, 3, 4"""

# Events moved to cold storage, already counted per player and kind when they
# were archived. Split like the hot counts, so one player's totals are found
# through the primary key (it leads with player_id) and everyone's by one read.
_ARCHIVED_COLUMNS = """SELECT player_id, event_type, CASE WHEN is_private THEN 1 ELSE 0 END AS is_private,
           CASE WHEN is_team THEN 1 ELSE 0 END AS is_team, n
    FROM archived_event_counts"""
_ARCHIVED_COUNTS = f"""{_ARCHIVED_COLUMNS}
    WHERE CAST(:player_id AS BIGINT) IS NULL
    UNION ALL
    {_ARCHIVED_COLUMNS}
    WHERE player_id = :player_id"""

# On SQLite, sorting every event is still most of the work. So each event is
# first counted as public and solo from the idempotency key's index alone (it
# leads with player and type); then only the private and team events are read
# and sorted, and moved to where they belong: their count added under their
# real privacy and team-ness and taken off the public-solo one. The counts are
# summed linearly afterwards, so the result is the same. (On PostgreSQL the
# second pass over the table costs more than the sort it saves.)
_SQLITE_COUNTS_OF_EVERYONE = f"""SELECT player_id, event_type, 0 AS is_private, 0 AS is_team, COUNT(*) AS n
    FROM activity_events
    WHERE CAST(:player_id AS BIGINT) IS NULL
    GROUP BY player_id, event_type
    UNION ALL
    SELECT moved.player_id, moved.event_type,
           CASE WHEN way.sign = 1 THEN moved.is_private ELSE 0 END,
           CASE WHEN way.sign = 1 THEN moved.is_team ELSE 0 END,
           way.sign * moved.n
    FROM (
        SELECT +player_id AS player_id, event_type, {_PRIVATE} AS is_private, {_TEAM} AS is_team,
               COUNT(*) AS n
        FROM activity_events
        WHERE CAST(:player_id AS BIGINT) IS NULL AND (is_private OR team_id IS NOT NULL)
        GROUP BY 1, 2, 3, 4
    ) AS moved
    CROSS JOIN (SELECT 1 AS sign UNION ALL SELECT -1) AS way"""


def expected_stats(session: Session, player_id: int | None = None) -> dict[StatKey, dict[str, int]]:
    """Return the stats every player's events add up to (rows of all zeros left out)."""
    sql = expected_stats_sql(dialect=session.get_bind().dialect.name) + (
        f"SELECT player_id, scope, {', '.join(STAT_NAMES)} FROM expected"
    )
    result = {}
    for row in session.execute(text(sql), {"player_id": player_id}):
        values = {s: int(getattr(row, s)) for s in STAT_NAMES}
        if any(values.values()):
            result[(row.player_id, row.scope)] = values
    return result
