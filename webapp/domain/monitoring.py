"""Monitoring: the rollups behind the overview charts, and the series the charts read.

Event volume
------------
Counting events per minute from a 6,000,000-row table on every chart request
is far too slow, so ``fold_event_volume`` (a periodic job) folds new events
into per-minute and per-day counts by event type and origin. It walks ids
above a watermark. Ids are handed out when a row is inserted but become
visible when its transaction commits, so on PostgreSQL a smaller id can appear
after a larger one was folded. The fold therefore settles only ids up to the
last event recorded more than ``settle`` ago (no transaction here stays open
that long: a backfill batch or a recording is one short transaction), adds
them to ``settled`` once, and recounts everything above into ``pending`` from
scratch at every fold. ``settled + pending`` is always what a direct count
gives, whatever the fold's timing.

The rollups count events ever recorded: archival, backfill rollbacks and
erasure delete events from the hot table but not from the counts. Whoever
deletes events calls ``note_removed`` first in the same transaction, which
settles the doomed events the fold has not settled yet, so they stay counted.
Reversals are events of their own ``*_reversed`` types and are counted as such.

Latency
-------
``webapp.latency`` adds per-minute histogram counts of timed operations;
``latency_series`` turns them into P50/P95/P99 by interpolating within the
histogram's bins, as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, case, cast, func, select, text, update
from sqlalchemy.orm import Session

from webapp.database import dialect_insert
from webapp.domain.errors import Invalid
from webapp.domain.jobs import progress_of
from webapp.models.activity import ActivityEvent
from webapp.models.archive import ArchivedEventCount
from webapp.models.base import utcnow
from webapp.models.jobs import BackfillBatch, JobRun
from webapp.models.monitoring import EventVolumeRollup, LatencyRollup, RollupWatermark
from webapp.models.reconciliation import ReconciliationRun
from webapp.observability import OPERATIONS

MINUTES_PER_DAY = 1440
EVENT_VOLUME = "event_volume"
#: No transaction that inserts events stays open longer than this.
DEFAULT_SETTLE = timedelta(minutes=10)
#: Minute buckets older than this are dropped; the day buckets keep the history.
MINUTE_RETENTION_DAYS = 3
_UPSERT_CHUNK = 2_000

#: Upper bounds (seconds) of the latency histogram's bins; the last bin is open-ended.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class TimeRange:
    """A chart's time range: how far back, and at which grain."""

    key: str
    label: str
    grain: str
    points: int
    # Latency histograms are summed over this many buckets of the grain per point.
    latency_step: int


RANGES: Mapping[str, TimeRange] = {
    "24h": TimeRange("24h", "Last 24 hours, by minute", "minute", MINUTES_PER_DAY, 10),
    "30d": TimeRange("30d", "Last 30 days, by day", "day", 30, 1),
    "90d": TimeRange("90d", "Last 90 days, by day", "day", 90, 1),
}
DEFAULT_RANGE = "24h"


def time_range(key: str | None) -> TimeRange:
    """Return the range named ``key`` (the default when empty).

    :raise Invalid: for any other name.
    """
    if not key:
        return RANGES[DEFAULT_RANGE]
    try:
        return RANGES[key]
    except KeyError:
        raise Invalid(
            f"range must be one of {', '.join(RANGES)}, not {key[:40]!r}"
        ) from None


# Buckets.


def epoch_minute(moment: datetime) -> int:
    """Return the whole minutes from the Unix epoch to ``moment`` (UTC)."""
    return int(moment.timestamp()) // 60


def day_of(minute: int) -> int:
    """Return the bucket of the day holding the minute bucket ``minute``."""
    return minute - minute % MINUTES_PER_DAY


def bucket_time(bucket: int) -> datetime:
    """Return the start of the bucket ``bucket`` (epoch minutes) as a UTC time."""
    return datetime.fromtimestamp(bucket * 60, UTC)


def _bucket_of(now: datetime, grain: str) -> int:
    minute = epoch_minute(now)
    return minute if grain == "minute" else day_of(minute)


def _step(grain: str) -> int:
    return 1 if grain == "minute" else MINUTES_PER_DAY


def _minute_sql(session: Session, column):
    if session.get_bind().dialect.name == "sqlite":
        seconds = cast(func.strftime("%s", column), BigInteger)
    else:
        seconds = cast(func.floor(func.extract("epoch", column)), BigInteger)
    return seconds // 60


# Folding event volume.


@dataclass(frozen=True)
class FoldResult:
    settled_events: int
    pending_events: int
    watermark: int


def _watermark(session: Session, *, lock: bool) -> RollupWatermark | None:
    table = RollupWatermark.__table__
    if lock:
        session.execute(
            dialect_insert(session, table)
            .values(name=EVENT_VOLUME, last_event_id=0, removed_events=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )
    statement = select(RollupWatermark).where(RollupWatermark.name == EVENT_VOLUME)
    if lock:
        # Folds and deleters take turns, so no event is settled twice or missed.
        statement = statement.with_for_update()
    return session.execute(statement.execution_options(populate_existing=True)).scalar_one_or_none()


def _counts_by_minute(session: Session, *conditions) -> Counter[tuple[int, str, str]]:
    events = ActivityEvent.__table__
    minute = _minute_sql(session, events.c.recorded_at).label("minute")
    rows = session.execute(
        select(minute, events.c.event_type, events.c.origin, func.count())
        .where(*conditions)
        .group_by(minute, events.c.event_type, events.c.origin)
    )
    return Counter({(m, t, o): n for m, t, o, n in rows})


def _by_grain(counts: Mapping[tuple[int, str, str], int], oldest_minute: int) -> dict[tuple, int]:
    rows: Counter[tuple[str, int, str, str]] = Counter()
    for (minute, event_type, origin), n in counts.items():
        if minute >= oldest_minute:
            rows[("minute", minute, event_type, origin)] += n
        rows[("day", day_of(minute), event_type, origin)] += n
    return rows


def _upsert_volume(session: Session, rows: Mapping[tuple, int], column: str, *, add: bool) -> None:
    if not rows:
        return
    table = EventVolumeRollup.__table__
    insert = dialect_insert(session, table)
    value = table.c[column] + insert.excluded[column] if add else insert.excluded[column]
    statement = insert.on_conflict_do_update(
        index_elements=["grain", "bucket", "event_type", "origin"], set_={column: value}
    )
    other = "pending" if column == "settled" else "settled"
    params = [
        {"grain": g, "bucket": b, "event_type": t, "origin": o, column: n, other: 0}
        for (g, b, t, o), n in sorted(rows.items())  # a fixed lock order
    ]
    for start in range(0, len(params), _UPSERT_CHUNK):
        session.execute(statement, params[start : start + _UPSERT_CHUNK])


def fold_event_volume(
    session: Session, *, now: datetime | None = None, settle: timedelta = DEFAULT_SETTLE
) -> FoldResult:
    """Fold events recorded since the last fold into the volume rollups (flush only)."""
    now = now or utcnow()
    events = ActivityEvent.__table__
    mark = _watermark(session, lock=True)
    low = mark.last_event_id
    oldest_minute = epoch_minute(now) - MINUTE_RETENTION_DAYS * MINUTES_PER_DAY
    high = session.scalar(
        select(func.max(events.c.id)).where(events.c.id > low, events.c.recorded_at < now - settle)
    ) or low

    settled = _counts_by_minute(session, events.c.id > low, events.c.id <= high)
    _upsert_volume(session, _by_grain(settled, oldest_minute), "settled", add=True)

    table = EventVolumeRollup.__table__
    if mark.pending_from is not None:
        session.execute(
            update(table)
            .where(
                table.c.pending != 0,
                ((table.c.grain == "minute") & (table.c.bucket >= mark.pending_from))
                | ((table.c.grain == "day") & (table.c.bucket >= day_of(mark.pending_from))),
            )
            .values(pending=0)
        )
    pending = _counts_by_minute(session, events.c.id > high)
    _upsert_volume(session, _by_grain(pending, oldest_minute), "pending", add=False)

    session.execute(
        table.delete().where(table.c.grain == "minute", table.c.bucket < oldest_minute)
    )
    mark.last_event_id = high
    mark.folded_at = now
    mark.pending_from = min((minute for minute, _t, _o in pending), default=None)
    session.flush()
    return FoldResult(sum(settled.values()), sum(pending.values()), high)


def note_removed(session: Session, event_ids: Sequence[int], *, archived: bool) -> None:
    """Keep events about to be deleted counted in the rollups (flush only; call before deleting).

    ``archived`` says whether they go to cold storage, whose totals already say
    how many left the hot table; other deletions are counted here for that.
    """
    if not event_ids:
        return
    events = ActivityEvent.__table__
    mark = _watermark(session, lock=True)
    unsettled: Counter[tuple[int, str, str]] = Counter()
    # Archival takes old events, nearly always settled long ago: nothing to look up then.
    doomed = [event_id for event_id in event_ids if event_id > mark.last_event_id]
    for start in range(0, len(doomed), _UPSERT_CHUNK):
        chunk = doomed[start : start + _UPSERT_CHUNK]
        unsettled.update(
            _counts_by_minute(session, events.c.id.in_(chunk))
        )
    oldest_minute = epoch_minute(utcnow()) - MINUTE_RETENTION_DAYS * MINUTES_PER_DAY
    _upsert_volume(session, _by_grain(unsettled, oldest_minute), "settled", add=True)
    if not archived:
        mark.removed_events += len(event_ids)
    session.flush()


# Reading the charts' series.


@dataclass(frozen=True)
class VolumeSeries:
    range: TimeRange
    times: list[datetime]
    by_type: dict[str, list[int]]

    @property
    def total(self) -> int:
        return sum(sum(values) for values in self.by_type.values())

    def rows(self) -> Iterable[tuple[datetime, list[int], int]]:
        """Yield each bucket with any events: its time, counts by type (in ``by_type`` order), total."""
        types = list(self.by_type)
        for index, moment in enumerate(self.times):
            counts = [self.by_type[t][index] for t in types]
            total = sum(counts)
            if total:
                yield moment, counts, total


def _window(span: TimeRange, now: datetime) -> tuple[int, int, int]:
    step = _step(span.grain)
    last = _bucket_of(now, span.grain)
    return last - (span.points - 1) * step, last, step


def event_volume(session: Session, span: TimeRange, *, now: datetime | None = None) -> VolumeSeries:
    """Return events recorded per bucket of ``span``, by event type."""
    first, last, step = _window(span, now or utcnow())
    table = EventVolumeRollup.__table__
    rows = session.execute(
        select(table.c.bucket, table.c.event_type,
               cast(func.sum(table.c.settled + table.c.pending), BigInteger))
        .where(table.c.grain == span.grain, table.c.bucket.between(first, last))
        .group_by(table.c.bucket, table.c.event_type)
    )
    # A day by minute is some 10,000 rows: this loop is most of the chart's time.
    by_type: dict[str, list[int]] = {}
    for bucket, event_type, n in rows:
        series = by_type.get(event_type)
        if series is None:
            series = by_type[event_type] = [0] * span.points
        series[(bucket - first) // step] += n
    ordered = dict(sorted(by_type.items(), key=lambda item: (-sum(item[1]), item[0])))
    times = [bucket_time(first + i * step) for i in range(span.points)]
    return VolumeSeries(span, times, ordered)


def recorded_totals(session: Session) -> dict[str, int]:
    """Return how many events of each type were ever recorded, as the rollups count them."""
    table = EventVolumeRollup.__table__
    rows = session.execute(
        select(table.c.event_type, func.sum(table.c.settled + table.c.pending))
        .where(table.c.grain == "day")
        .group_by(table.c.event_type)
    )
    return {event_type: int(n) for event_type, n in rows if n}


@dataclass(frozen=True)
class DriftPoint:
    run_id: int
    started_at: datetime
    players_checked: int
    players_drifted: int
    # Mean players drifted over the successful runs of the 7 days up to this run.
    rolling_mean: float


@dataclass(frozen=True)
class SuccessDay:
    day: datetime
    succeeded: int
    failed: int

    @property
    def rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return 100.0 * self.succeeded / finished if finished else None


@dataclass(frozen=True)
class DriftSeries:
    range: TimeRange
    points: list[DriftPoint]
    days: list[SuccessDay]
    start: datetime
    end: datetime

    @property
    def success_rate(self) -> float | None:
        succeeded = sum(d.succeeded for d in self.days)
        finished = succeeded + sum(d.failed for d in self.days)
        return 100.0 * succeeded / finished if finished else None


ROLLING_WINDOW = timedelta(days=7)


def drift_trend(session: Session, span: TimeRange, *, now: datetime | None = None) -> DriftSeries:
    """Return players drifted per whole-population reconciliation run, with a 7-day rolling mean, and daily success."""
    now = now or utcnow()
    first, _last, _step = _window(span, now)
    start = bucket_time(first)
    runs = session.execute(
        select(
            ReconciliationRun.id,
            ReconciliationRun.started_at,
            ReconciliationRun.status,
            ReconciliationRun.players_checked,
            ReconciliationRun.players_drifted,
        )
        .where(ReconciliationRun.player_id.is_(None), ReconciliationRun.started_at >= start - ROLLING_WINDOW)
        .order_by(ReconciliationRun.started_at, ReconciliationRun.id)
    ).all()
    succeeded = [run for run in runs if run.status == "succeeded"]
    points: list[DriftPoint] = []
    window_start = 0
    window_sum = 0
    for index, run in enumerate(succeeded):
        window_sum += run.players_drifted
        while succeeded[window_start].started_at <= run.started_at - ROLLING_WINDOW:
            window_sum -= succeeded[window_start].players_drifted
            window_start += 1
        if run.started_at >= start:
            points.append(
                DriftPoint(run.id, run.started_at, run.players_checked, run.players_drifted,
                           window_sum / (index - window_start + 1))
            )
    outcome: dict[int, Counter[str]] = defaultdict(Counter)
    for run in runs:
        if run.started_at >= start and run.status in ("succeeded", "failed"):
            outcome[day_of(epoch_minute(run.started_at))][run.status] += 1
    days = [
        SuccessDay(bucket_time(day), outcome[day]["succeeded"], outcome[day]["failed"])
        for day in sorted(outcome)
    ]
    return DriftSeries(span, points, days, start, now)


def latency_bin(seconds: float) -> int:
    """Return the histogram bin of a duration."""
    return bisect_left(LATENCY_BOUNDS, seconds)


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """Estimate the ``q`` quantile (seconds) of a histogram of bin counts, linear within a bin."""
    total = sum(counts.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for index in sorted(counts):
        n = counts[index]
        if seen + n >= rank and n:
            lower = LATENCY_BOUNDS[index - 1] if index > 0 else 0.0
            if index >= len(LATENCY_BOUNDS):
                return lower  # the open-ended bin: no better estimate than its floor
            upper = LATENCY_BOUNDS[index]
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return LATENCY_BOUNDS[-1]


@dataclass(frozen=True)
class LatencySeries:
    range: TimeRange
    times: list[datetime]
    # operation → quantile → milliseconds (None where nothing was timed)
    by_operation: dict[str, dict[float, list[float | None]]]
    counts: dict[str, list[int]] = field(default_factory=dict)


def latency(session: Session, span: TimeRange, *, now: datetime | None = None) -> LatencySeries:
    """Return P50/P95/P99 per operation per point of ``span``, in milliseconds."""
    first, last, step = _window(span, now or utcnow())
    step *= span.latency_step
    points = math.ceil(span.points / span.latency_step)
    first = last - (points - 1) * step
    table = LatencyRollup.__table__
    point = ((table.c.bucket - first) // step).label("point")
    rows = session.execute(
        select(point, table.c.operation, table.c.bin, func.sum(table.c.n))
        .where(table.c.grain == span.grain, table.c.bucket.between(first, last))
        .group_by(point, table.c.operation, table.c.bin)
    ).all()
    histograms: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)
    for index, operation, bin_, n in rows:
        histograms[(operation, int(index))][int(bin_)] += int(n)
    by_operation: dict[str, dict[float, list[float | None]]] = {}
    counts: dict[str, list[int]] = {}
    for operation in OPERATIONS:
        series = {q: [None] * points for q in QUANTILES}
        seen = [0] * points
        for index in range(points):
            histogram = histograms.get((operation, index))
            if not histogram:
                continue
            seen[index] = sum(histogram.values())
            for q in QUANTILES:
                value = quantile(histogram, q)
                series[q][index] = None if value is None else round(value * 1000, 3)
        by_operation[operation] = series
        counts[operation] = seen
    times = [bucket_time(first + i * step) for i in range(points)]
    return LatencySeries(span, times, by_operation, counts)


def add_latency_counts(session_or_connection, counts: Mapping[tuple[int, str, int], int]) -> None:
    """Add histogram counts keyed by (epoch minute, operation, bin) to both grains."""
    rows: Counter[tuple[str, int, str, int]] = Counter()
    for (minute, operation, bin_), n in counts.items():
        rows[("minute", minute, operation, bin_)] += n
        rows[("day", day_of(minute), operation, bin_)] += n
    if not rows:
        return
    table = LatencyRollup.__table__
    insert = dialect_insert(session_or_connection, table)
    statement = insert.on_conflict_do_update(
        index_elements=["grain", "bucket", "operation", "bin"], set_={"n": table.c.n + insert.excluded.n}
    )
    session_or_connection.execute(
        statement,
        [{"grain": g, "bucket": b, "operation": o, "bin": i, "n": n} for (g, b, o, i), n in sorted(rows.items())],
    )
    oldest = max(minute for minute, _o, _b in counts) - MINUTE_RETENTION_DAYS * MINUTES_PER_DAY
    session_or_connection.execute(
        table.delete().where(table.c.grain == "minute", table.c.bucket < oldest)
    )


@dataclass(frozen=True)
class BackfillGauge:
    run_id: int
    events_created: int
    # Estimated from the share of source records read when the run has no target.
    events_expected: int | None
    events_per_second: float | None
    seconds_left: float | None
    records_done: int
    records_total: int | None

    @property
    def percent(self) -> float | None:
        if not self.events_expected:
            return None
        return min(100.0, 100.0 * self.events_created / self.events_expected)


def backfill_gauges(session: Session, *, now: datetime | None = None) -> list[BackfillGauge]:
    """Return the progress in events of every running backfill."""
    now = now or utcnow()
    runs = list(session.scalars(
        select(JobRun).where(JobRun.kind == "backfill", JobRun.status == "running").order_by(JobRun.id)
    ))
    if not runs:
        return []
    # The rate counts only what the current attempt created, over the attempt's own
    # time: a run resumed long after it stopped was not working in between.
    began = func.coalesce(JobRun.attempt_started_at, JobRun.started_at)
    in_this_attempt = case((BackfillBatch.started_at >= began, BackfillBatch.events_inserted), else_=0)
    created = {
        run_id: (int(events or 0), int(in_attempt or 0))
        for run_id, events, in_attempt in session.execute(
            select(
                BackfillBatch.run_id,
                func.sum(BackfillBatch.events_inserted),
                func.sum(in_this_attempt),
            )
            .join(JobRun, JobRun.id == BackfillBatch.run_id)
            .where(BackfillBatch.run_id.in_([run.id for run in runs]))
            .group_by(BackfillBatch.run_id)
        )
    }
    gauges = []
    for run in runs:
        events, in_attempt = created.get(run.id, (0, 0))
        expected = run.params.get("expected_events") if run.params else None
        if expected is None and run.progress_total and run.progress_done:
            expected = round(events * run.progress_total / run.progress_done)
        attempt_began = run.attempt_started_at or run.started_at
        elapsed = (now - attempt_began).total_seconds() if attempt_began else 0
        rate = in_attempt / elapsed if elapsed > 0 and in_attempt else None
        left = progress_of(run, now).seconds_left
        if rate and expected is not None:
            left = max(0.0, (expected - events) / rate)
        gauges.append(BackfillGauge(run.id, events, expected, rate, left,
                                    run.progress_done, run.progress_total))
    return gauges


@dataclass(frozen=True)
class TableSize:
    rows: int
    rows_exact: bool
    bytes: int
    bytes_scope: str
    alert_bytes: int | None
    archive_after_days: int

    @property
    def share_of_threshold(self) -> float | None:
        return 100.0 * self.bytes / self.alert_bytes if self.alert_bytes else None


def table_size(session: Session, *, alert_bytes: int | None, archive_after_days: int) -> TableSize:
    """Return the hot event table's rows and bytes, without counting its rows.

    PostgreSQL: the planner's row estimate and the table's size with its indexes
    and TOAST. SQLite: events ever recorded less those archived or removed, and
    the size of the whole database file (measuring one table means reading all
    its pages).
    """
    if session.get_bind().dialect.name == "postgresql":
        rows, size = session.execute(text(
            "SELECT greatest(reltuples, 0)::bigint, pg_total_relation_size(oid) "
            "FROM pg_class WHERE oid = 'activity_events'::regclass"
        )).one()
        if rows == 0:
            # Never analysed yet: a fresh table is small enough to count.
            rows = session.scalar(select(func.count()).select_from(ActivityEvent))
        return TableSize(int(rows), False, int(size), "table, indexes and TOAST",
                         alert_bytes, archive_after_days)
    recorded = sum(recorded_totals(session).values())
    archived = session.scalar(select(func.coalesce(func.sum(ArchivedEventCount.n), 0)))
    mark = _watermark(session, lock=False)
    removed = mark.removed_events if mark else 0
    pages = session.execute(text("PRAGMA page_count")).scalar()
    page_size = session.execute(text("PRAGMA page_size")).scalar()
    return TableSize(max(0, recorded - int(archived) - removed), False, pages * page_size,
                     "whole database file", alert_bytes, archive_after_days)
