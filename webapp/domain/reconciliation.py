"""Reconciliation: recompute stats from events in one set-based query, report and repair drift.

Drift is ``expected - stored`` per player, scope and stat. Expected values
count the hot events plus the totals of archived ones (``archived_event_counts``,
see ``expected_stats_sql``), so archival moves no stat and makes no drift.
Expected values and stored values are read by a single statement inside a
snapshot, so events that commit meanwhile (each together with its stat delta)
are either wholly in the snapshot or wholly outside it and never look like drift.
Repairs add the drift as a delta (``column = column + drift``) instead of
overwriting, so a change committed after the snapshot is kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from webapp.database import begin_snapshot
from webapp.domain.errors import NotFound
from webapp.domain.projection import StatKey, apply_stat_deltas, expected_stats_sql
from webapp.models.base import utcnow
from webapp.models.players import Player
from webapp.models.reconciliation import ReconciliationDrift, ReconciliationRun
from webapp.models.stats import STAT_NAMES


@dataclass(frozen=True)
class StatDrift:
    player_id: int
    scope: str
    stat: str
    expected: int
    actual: int

    @property
    def difference(self) -> int:
        return self.expected - self.actual


@dataclass(frozen=True)
class DriftReport:
    """What one look at the whole projection found."""

    players_checked: int
    drifts: list[StatDrift] = field(default_factory=list)

    @property
    def drifted_players(self) -> list[int]:
        return sorted({d.player_id for d in self.drifts})

    @property
    def drifted_share(self) -> float:
        return len(self.drifted_players) / self.players_checked if self.players_checked else 0.0

    def corrections(self) -> dict[StatKey, dict[str, int]]:
        """The deltas that bring every drifted stat back to its expected value."""
        deltas: dict[StatKey, dict[str, int]] = defaultdict(dict)
        for d in self.drifts:
            deltas[(d.player_id, d.scope)][d.stat] = d.difference
        return dict(deltas)

    def correction_batches(self, players_per_batch: int) -> list[dict[StatKey, dict[str, int]]]:
        """Split the corrections into batches of whole players, every scope of a player together."""
        by_player: dict[int, dict[StatKey, dict[str, int]]] = defaultdict(dict)
        for key, deltas in self.corrections().items():
            by_player[key[0]][key] = deltas
        players = sorted(by_player)
        return [
            {
                key: deltas
                for player in players[start : start + players_per_batch]
                for key, deltas in by_player[player].items()
            }
            for start in range(0, len(players), players_per_batch)
        ]


# Tombstones hold erased players' events for other players' history and keep
# no stats (webapp.domain.erasure): their events expect stats nobody keeps, so
# they are neither checked nor repaired.
_TOMBSTONES = "SELECT id FROM players WHERE is_tombstone"


@lru_cache(maxsize=4)
def drift_sql(dialect: str | None) -> str:
    """The SQL of ``find_drift``: expected stats, counted the way fastest on ``dialect``, against stored.

    Without a dialect, the counting that runs well on both databases (see ``expected_stats_sql``).
    """
    columns = ", ".join(STAT_NAMES)
    negated = ", ".join(f"-{s}" for s in STAT_NAMES)
    summed = ", ".join(f"SUM({s}) AS {s}" for s in STAT_NAMES)
    any_nonzero = " OR ".join(f"SUM({s}) <> 0" for s in STAT_NAMES)
    drift_columns = ", ".join(f"d.{s} AS drift_{s}" for s in STAT_NAMES)
    actual_columns = ", ".join(f"COALESCE(s.{s}, 0) AS actual_{s}" for s in STAT_NAMES)
    return expected_stats_sql(dialect=dialect) + f""",
stored AS (
    SELECT player_id, scope, {columns}
    FROM player_stats
    WHERE (CAST(:player_id AS BIGINT) IS NULL OR player_id = :player_id)
),
drift AS (
    SELECT player_id, scope, {summed}
    FROM (
        SELECT player_id, scope, {columns} FROM expected
        UNION ALL
        SELECT player_id, scope, {negated} FROM stored
    ) AS both_sides
    WHERE player_id NOT IN ({_TOMBSTONES})
    GROUP BY player_id, scope
    HAVING {any_nonzero}
)
SELECT d.player_id, d.scope, {drift_columns}, {actual_columns}
FROM drift d LEFT JOIN stored s ON s.player_id = d.player_id AND s.scope = d.scope
ORDER BY d.player_id, d.scope
"""


def find_drift(session: Session, player_id: int | None = None) -> DriftReport:
    """Compare every player's stored stats with what their events add up to.

    Starts its own snapshot transaction on ``session`` and leaves it open; the
    caller ends it.
    """
    begin_snapshot(session)
    if player_id is not None:
        require_player(session, player_id)
        checked = 1
    else:
        checked = session.scalar(
            select(func.count()).select_from(Player).where(Player.is_tombstone.is_(False))
        ) or 0
    drifts = []
    sql = drift_sql(session.get_bind().dialect.name)
    for row in session.execute(text(sql), {"player_id": player_id}).mappings():
        for stat in STAT_NAMES:
            difference = int(row[f"drift_{stat}"])
            if difference:
                actual = int(row[f"actual_{stat}"])
                drifts.append(
                    StatDrift(row["player_id"], row["scope"], stat, actual + difference, actual)
                )
    return DriftReport(players_checked=checked, drifts=drifts)


def require_player(session: Session, player_id: int) -> None:
    """Raise ``NotFound`` unless the player exists."""
    if session.get(Player, player_id) is None:
        raise NotFound(f"player {player_id} does not exist")


def repair_drift(session: Session, corrections: dict[StatKey, dict[str, int]]) -> int:
    """Add the corrections of some drifted players to their stats; return rows repaired."""
    return apply_stat_deltas(session, corrections)


def start_run(session: Session, *, fix: bool, player_id: int | None = None) -> ReconciliationRun:
    """Record that a reconciliation run has started."""
    run = ReconciliationRun(started_at=utcnow(), status="running", fix=fix, player_id=player_id)
    session.add(run)
    session.flush()
    return run


def record_findings(session: Session, run_id: int, report: DriftReport) -> ReconciliationRun:
    """Store what a run found: players checked and drifted, and every drifted stat."""
    run = _run(session, run_id)
    run.players_checked = report.players_checked
    run.players_drifted = len(report.drifted_players)
    session.flush()
    if report.drifts:
        # One executemany: ORM objects would each need their id back, which SQLite
        # answers one INSERT per row.
        session.execute(
            insert(ReconciliationDrift),
            [
                {"run_id": run_id, "player_id": d.player_id, "scope": d.scope, "stat": d.stat,
                 "expected": d.expected, "actual": d.actual}
                for d in report.drifts
            ],
        )
    return run


def record_repaired(session: Session, run_id: int, players_fixed: int) -> ReconciliationRun:
    """Store how many players a run has repaired so far, with the batch that repaired them.

    So the count stays true of a run whose worker dies before it can end the run.
    """
    run = _run(session, run_id)
    run.players_fixed = players_fixed
    session.flush()
    return run


def finish_run(session: Session, run_id: int, players_fixed: int) -> ReconciliationRun:
    """Mark a run succeeded after repairing ``players_fixed`` players."""
    run = _run(session, run_id)
    run.finished_at = utcnow()
    run.status = "succeeded"
    run.players_fixed = players_fixed
    session.flush()
    return run


def fail_run(
    session: Session, run_id: int, error: str, finished_at: datetime | None = None, *,
    players_fixed: int = 0,
) -> ReconciliationRun:
    """Mark a run failed with its error and the players it had repaired before failing."""
    return _end_run(session, run_id, "failed", error, finished_at, players_fixed)


def cancel_run(
    session: Session, run_id: int, reason: str, *, players_fixed: int = 0
) -> ReconciliationRun:
    """Mark a run cancelled by staff, saying why and how many players it had repaired before it stopped."""
    return _end_run(session, run_id, "cancelled", reason, None, players_fixed)


def _end_run(
    session: Session, run_id: int, status: str, error: str, finished_at: datetime | None,
    players_fixed: int,
) -> ReconciliationRun:
    run = _run(session, run_id)
    run.finished_at = finished_at or utcnow()
    run.status = status
    run.error = error
    run.players_fixed = players_fixed
    session.flush()
    return run


def fail_abandoned_run(
    session: Session, run_id: int, reason: str, finished_at: datetime | None = None
) -> ReconciliationRun | None:
    """Mark failed a run its worker left ``running`` (killed, out of memory); None if it had ended.

    The players it repaired keep being counted: each batch stored its count as it committed.
    """
    run = session.get(ReconciliationRun, run_id)
    if run is None or run.status != "running":
        return None
    run.finished_at = finished_at or utcnow()
    run.status = "failed"
    run.error = reason
    session.flush()
    return run


def _run(session: Session, run_id: int) -> ReconciliationRun:
    run = session.get(ReconciliationRun, run_id)
    if run is None:
        raise NotFound(f"reconciliation run {run_id} does not exist")
    return run
