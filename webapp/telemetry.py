"""Prometheus metrics: what this process did, and what the database holds at scrape time.

Counters and histograms are fed by ``webapp.observability`` and live in this
process, or, when ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn workers, queue
consumers on the same host), in files there that a scrape of any process sums.
The variable must be in the environment before ``prometheus_client`` is
imported, which is why it is read from the environment and never set in code.

Figures that belong to the database (reconciliation runs, drift, job progress,
table size, alert deliveries) are read by ``DatabaseCollector`` when scraped,
by whichever process answers, so they are never summed over workers. Every
query it makes reads a small table or an index bound, never a count over the
event table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from webapp import observability
from webapp.domain.taxonomy import EVENT_TYPES
from webapp.models.activity import ORIGINS, ActivityEvent
from webapp.models.jobs import AlertDelivery, JobRun
from webapp.models.reconciliation import ReconciliationRun
from webapp.transaction import after_commit

log = logging.getLogger(__name__)

# Recording a batch takes a millisecond or two; a feed page a few. The 0.1 s
# bucket is the edge the recording latency alert watches.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Created unregistered: a registry is built for each scrape (see ``registry_for``).
EVENTS_RECORDED = Counter(
    "activity_events_recorded", "Events recorded (committed), by event type and origin.",
    ["event_type", "origin"], registry=None,
)
EVENTS_DUPLICATE = Counter(
    "activity_events_duplicates", "Facts refused as repeats of a stored event (committed), by type and origin.",
    ["event_type", "origin"], registry=None,
)
EVENTS_CONFLICTING = Counter(
    "activity_events_conflicts", "Facts refused because a stored event with their key differs, by type.",
    ["event_type"], registry=None,
)
RECORDING_SECONDS = Histogram(
    "activity_recording_seconds", "Time to record one batch of events (validation, insert, stat deltas).",
    buckets=LATENCY_BUCKETS, registry=None,
)
QUERY_SECONDS = Histogram(
    "activity_feed_query_seconds", "Time to read one page of a player's timeline or feed.",
    ["query"], buckets=LATENCY_BUCKETS, registry=None,
)
PROCESS_METRICS = (EVENTS_RECORDED, EVENTS_DUPLICATE, EVENTS_CONFLICTING, RECORDING_SECONDS, QUERY_SECONDS)

_QUERY_LABELS = {observability.TIMELINE_QUERY: "timeline", observability.FEED_QUERY: "feed"}

#: Tables whose size is exported: the event table and the read model beside it.
SIZED_TABLES = ("activity_events", "player_stats")

#: Every metric family a scrape exports, as named in PromQL (without sample suffixes).
EXPORTED_METRICS = {
    "activity_events_recorded_total": "counter",
    "activity_events_duplicates_total": "counter",
    "activity_events_conflicts_total": "counter",
    "activity_recording_seconds": "histogram",
    "activity_feed_query_seconds": "histogram",
    "activity_reconciliation_runs_total": "counter",
    "activity_reconciliation_last_finished_timestamp_seconds": "gauge",
    "activity_reconciliation_drifted_players": "gauge",
    "activity_reconciliation_checked_players": "gauge",
    "activity_job_progress_done": "gauge",
    "activity_job_progress_total": "gauge",
    "activity_table_rows": "gauge",
    "activity_table_bytes": "gauge",
    "activity_event_table_alert_bytes": "gauge",
    "activity_alert_deliveries_total": "counter",
    "activity_metrics_database_up": "gauge",
}


def init_app(app: Flask) -> None:
    """Feed this process's metrics from the observations of every app it runs."""
    observability.subscribe(observe)
    # The *_created series only restate the process start time, once per label set.
    disable_created_metrics()
    # Every known series exists from the start, so rates and "dropped to zero"
    # are visible for a type that has not been recorded since the process began.
    for name in EVENT_TYPES:
        for origin in ORIGINS:
            EVENTS_RECORDED.labels(name, origin)
            EVENTS_DUPLICATE.labels(name, origin)
    for label in _QUERY_LABELS.values():
        QUERY_SECONDS.labels(label)


def observe(observation: observability.Observation) -> None:
    """Count one observed operation; recorded events only once their transaction commits."""
    if observation.operation == observability.RECORD_EVENTS:
        RECORDING_SECONDS.observe(observation.seconds)
        details = observation.details
        counts = details.get("outcome_counts") or _outcome_counts(details["facts"], details["outcome"])
        if counts:
            try:
                after_commit(details["session"], lambda: _count(counts))
            except RuntimeError:
                # Outside a unit of work nothing says the events will commit, so they are not counted.
                log.debug("events recorded outside a unit of work are not counted")
    elif observation.operation in _QUERY_LABELS:
        QUERY_SECONDS.labels(_QUERY_LABELS[observation.operation]).observe(observation.seconds)


def _outcome_counts(facts, outcome) -> dict[tuple[str, str, str], int]:
    """Count outcomes by (status, event type, origin); conflicts are counted by type alone."""
    counts: dict[tuple[str, str, str], int] = {}
    for fact, result in zip(facts, outcome.outcomes, strict=True):
        key = (result.status, fact.event_type, fact.origin)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _count(counts: dict[tuple[str, str, str], int]) -> None:
    for (status, event_type, origin), n in counts.items():
        _series(status, event_type, origin).inc(n)


@lru_cache(maxsize=1024)
def _series(status: str, event_type: str, origin: str):
    # Looking a labelled series up takes a lock and builds its key every time; the
    # set of types and origins is small and fixed, so each is looked up once.
    if status == "conflict":
        return EVENTS_CONFLICTING.labels(event_type)
    return (EVENTS_RECORDED if status == "recorded" else EVENTS_DUPLICATE).labels(event_type, origin)


def multiprocess_dir(app: Flask) -> str | None:
    return app.config.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry_for(app: Flask) -> CollectorRegistry:
    """Build the registry one scrape reads: process (or all workers') metrics and the database's."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir(app)
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        for metric in PROCESS_METRICS:
            registry.register(metric)
    registry.register(DatabaseCollector(app))
    return registry


def exposition(app: Flask, accept: str | None = None) -> tuple[bytes, str]:
    """Return every metric, read now, in the format ``accept`` asks for (Prometheus text by default)."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry_for(app)), content_type


class DatabaseCollector(Collector):
    """Read the database's figures when scraped; a database that does not answer is reported, not raised."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        from webapp.extensions import db

        up = GaugeMetricFamily("activity_metrics_database_up",
                               "1 when the scrape could read the database's figures, else 0.")
        try:
            with self.app.app_context(), db.engine.connect() as connection:
                families = list(self._families(connection))
        except Exception:  # a scrape must still show the process metrics and that the database failed
            log.exception("could not read the database's metrics")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, connection: Connection) -> Iterator[Metric]:
        yield from _reconciliation_metrics(connection)
        yield from _job_metrics(connection)
        yield from _table_metrics(connection, self.app.config)
        yield from _alert_metrics(connection)


def _reconciliation_metrics(connection: Connection) -> Iterator[Metric]:
    runs = CounterMetricFamily("activity_reconciliation_runs", "Reconciliation runs stored, by status.",
                               labels=["status"])
    last = GaugeMetricFamily("activity_reconciliation_last_finished_timestamp_seconds",
                             "When the latest reconciliation run of each status finished (Unix time).",
                             labels=["status"])
    table = ReconciliationRun.__table__
    by_status = {
        status: (n, finished)
        for status, n, finished in connection.execute(
            select(table.c.status, func.count(), func.max(table.c.finished_at)).group_by(table.c.status)
        )
    }
    for status in ("running", "succeeded", "failed", "cancelled"):
        n, finished = by_status.get(status, (0, None))
        runs.add_metric([status], n)
        if finished is not None:
            last.add_metric([status], _as_utc(finished).timestamp())
    yield runs
    yield last

    drifted = GaugeMetricFamily("activity_reconciliation_drifted_players",
                                "Players whose stats drifted, in the latest whole reconciliation run that succeeded.")
    checked = GaugeMetricFamily("activity_reconciliation_checked_players",
                                "Players checked by the latest whole reconciliation run that succeeded.")
    latest = connection.execute(
        select(table.c.players_drifted, table.c.players_checked)
        .where(table.c.status == "succeeded", table.c.player_id.is_(None))
        .order_by(table.c.id.desc())
        .limit(1)
    ).first()
    if latest is not None:
        drifted.add_metric([], latest.players_drifted)
        checked.add_metric([], latest.players_checked)
    yield drifted
    yield checked


def _job_metrics(connection: Connection) -> Iterator[Metric]:
    done = GaugeMetricFamily("activity_job_progress_done", "Units of work done by each running job.",
                             labels=["kind", "job_id"])
    total = GaugeMetricFamily("activity_job_progress_total",
                              "Units of work a running job has in all, when it knows.", labels=["kind", "job_id"])
    table = JobRun.__table__
    for run in connection.execute(
        select(table.c.id, table.c.kind, table.c.progress_done, table.c.progress_total)
        .where(table.c.status == "running")
        .order_by(table.c.id)
    ):
        labels = [run.kind, str(run.id)]
        done.add_metric(labels, run.progress_done or 0)
        if run.progress_total is not None:
            total.add_metric(labels, run.progress_total)
    yield done
    yield total


def _table_metrics(connection: Connection, config: Any) -> Iterator[Metric]:
    rows = GaugeMetricFamily("activity_table_rows", "Estimated rows in the table.", labels=["table"])
    size = GaugeMetricFamily("activity_table_bytes", "Bytes the table takes on disk (see ops/README.md).",
                             labels=["table"])
    for name in SIZED_TABLES:
        estimate = table_rows_estimate(connection, name)
        if estimate is not None:
            rows.add_metric([name], estimate)
        size.add_metric([name], table_bytes(connection, name))
    yield rows
    yield size
    threshold = GaugeMetricFamily("activity_event_table_alert_bytes",
                                  "Size of the event table above which it is due for archival (config).")
    threshold.add_metric([], int(config.get("EVENT_TABLE_ALERT_BYTES") or 0))
    yield threshold


def _alert_metrics(connection: Connection) -> Iterator[Metric]:
    deliveries = CounterMetricFamily("activity_alert_deliveries", "Alert deliveries stored, by rule, channel and outcome.",
                                     labels=["rule", "channel", "status"])
    table = AlertDelivery.__table__
    for rule, channel, status, n in connection.execute(
        select(table.c.rule, table.c.channel, table.c.status, func.count())
        .group_by(table.c.rule, table.c.channel, table.c.status)
        .order_by(table.c.rule, table.c.channel, table.c.status)
    ):
        deliveries.add_metric([rule, channel, status], n)
    yield deliveries


def table_rows_estimate(connection: Connection, name: str) -> int | None:
    """Estimate the rows of ``name`` without counting them.

    PostgreSQL keeps an estimate from its last ANALYZE or VACUUM
    (``pg_class.reltuples``). SQLite keeps none that stays current, so a table
    with an integer key is estimated from its key range (one lookup at each end
    of the primary key; gaps left by archival or a rolled-back backfill make it
    an upper bound), and only the read model, a row or two per player, is counted.
    """
    if connection.dialect.name == "postgresql":
        estimate = connection.execute(
            text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:name)"), {"name": name}
        ).scalar()
        if estimate is not None and estimate >= 0:
            return int(estimate)
        # Never analysed yet (a new table): fall through to the same bound SQLite uses.
    if name == "activity_events":
        # Two statements: SQLite reads min() or max() off the index only when it is alone in the query.
        low = connection.execute(select(func.min(ActivityEvent.id))).scalar()
        high = connection.execute(select(func.max(ActivityEvent.id))).scalar()
        return 0 if low is None else high - low + 1
    if name == "player_stats":
        return connection.execute(text("SELECT count(*) FROM player_stats")).scalar()
    return None


def table_bytes(connection: Connection, name: str) -> int:
    """Bytes ``name`` takes: with its indexes and TOAST on PostgreSQL; the whole file on SQLite.

    SQLite can only size one table by reading every page of it (``dbstat``),
    too slow for a scrape, so it reports the used pages of the database file,
    which the event table dominates: an upper bound for every table.
    """
    if connection.dialect.name == "postgresql":
        return int(connection.execute(
            text("SELECT coalesce(pg_total_relation_size(to_regclass(:name)), 0)"), {"name": name}
        ).scalar())
    page_size = connection.exec_driver_sql("PRAGMA page_size").scalar()
    pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
    free = connection.exec_driver_sql("PRAGMA freelist_count").scalar()
    return int(page_size * (pages - free))


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
