"""Player stats as a projection of events: deltas applied, and the full recompute.

Stats rows change only through ``apply_stat_deltas``, which adds to the stored
values in the database (``column = column + delta``) so that concurrent writers
never lose each other's updates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from webapp.database import dialect_insert
from webapp.domain.taxonomy import EVENT_TYPES
from webapp.models.base import utcnow
from webapp.models.stats import STAT_NAMES, PlayerStats


@dataclass(frozen=True)
class ProjectedEvent:
    """The parts of an event that decide its stat deltas."""

    player_id: int
    event_type: str
    is_team: bool
    is_private: bool


StatKey = tuple[int, str]  # (player_id, scope)


def stat_deltas(events: Iterable[ProjectedEvent], sign: int = 1) -> dict[StatKey, dict[str, int]]:
    """Sum the stat deltas of ``events`` per player and scope.

    Every event counts in the ``all`` scope; only non-private ones in ``public``.
    ``sign=-1`` gives the deltas that take the events back out.
    """
    totals: dict[StatKey, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STAT_NAMES, 0))
    for event in events:
        deltas = EVENT_TYPES[event.event_type].deltas_for(event.is_team)
        scopes = ("all",) if event.is_private else ("all", "public")
        for scope in scopes:
            row = totals[(event.player_id, scope)]
            for stat, delta in deltas.items():
                row[stat] += sign * delta
    return dict(totals)


def apply_stat_deltas(session: Session, deltas: Mapping[StatKey, Mapping[str, int]]) -> int:
    """Add ``deltas`` to the stored stats, creating rows as needed; return rows touched."""
    if not deltas:
        return 0
    now = utcnow()
    # A fixed order keeps concurrent writers from deadlocking on each other's rows.
    rows = [
        {"player_id": player_id, "scope": scope, "updated_at": now, **{s: d.get(s, 0) for s in STAT_NAMES}}
        for (player_id, scope), d in sorted(deltas.items())
    ]
    table = PlayerStats.__table__
    insert = dialect_insert(session, table)
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.player_id, table.c.scope],
        set_={
            **{name: table.c[name] + insert.excluded[name] for name in STAT_NAMES},
            "updated_at": insert.excluded.updated_at,
        },
    )
    session.execute(statement, rows)
    return len(rows)


def _deltas_values_sql() -> str:
    """The delta table as SQL rows: (event_type, is_team, one column per stat)."""
    rows = []
    for event_type in EVENT_TYPES.values():
        for is_team in (0, 1):
            deltas = event_type.deltas_for(bool(is_team))
            values = ", ".join(str(deltas.get(stat, 0)) for stat in STAT_NAMES)
            rows.append(f"('{event_type.name}', {is_team}, {values})")
    return ",\n    ".join(rows)


def expected_stats_sql(extra_counts_sql: str = "") -> str:
    """SQL computing, per player and scope, the stats their events add up to.

    The events are first counted per (player, type, privacy, team-ness), then the
    counts are joined to the delta table, so the work grows with the number of
    events only in one GROUP BY. ``:player_id`` (NULL for everyone) limits it.
    ``extra_counts_sql`` may add rows of the same shape as the ``counts`` CTE
    (e.g. totals of archived events) with a leading ``UNION ALL``.
    """
    stat_columns = ", ".join(STAT_NAMES)
    sum_all = ",\n        ".join(f"SUM(c.n * d.{s}) AS {s}" for s in STAT_NAMES)
    return f"""
WITH deltas (event_type, is_team, {stat_columns}) AS (
    VALUES
    {_deltas_values_sql()}
),
counts AS (
    SELECT player_id, event_type,
           CASE WHEN is_private THEN 1 ELSE 0 END AS is_private,
           CASE WHEN team_id IS NULL THEN 0 ELSE 1 END AS is_team,
           COUNT(*) AS n
    FROM activity_events
    WHERE (CAST(:player_id AS BIGINT) IS NULL OR player_id = :player_id)
    GROUP BY 1, 2, 3, 4
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


def expected_stats(session: Session, player_id: int | None = None) -> dict[StatKey, dict[str, int]]:
    """Return the stats every player's events add up to (rows of all zeros left out)."""
    sql = expected_stats_sql() + f"SELECT player_id, scope, {', '.join(STAT_NAMES)} FROM expected"
    result = {}
    for row in session.execute(text(sql), {"player_id": player_id}):
        values = {s: int(getattr(row, s)) for s in STAT_NAMES}
        if any(values.values()):
            result[(row.player_id, row.scope)] = values
    return result
