"""Benchmark a /metrics scrape and the hourly volume check on a large event table.

One run, per backend, on a scratch database built by the real migrations and
loaded in the database itself with ``--events`` events (6,000,000 by default)
recorded over the last eight days, ids in recording order:

1. ``scrape``: GET /metrics through the app, database figures included
   (reconciliation, running jobs, table rows and bytes, alert deliveries);
2. ``volume_check``: the volume drop check (last hour and the same hour on
   each of the 7 previous days, by bisecting the primary key);
3. baselines, the queries these avoid: ``count_all``, an exact count of the
   event table, and ``volume_scan``, the volume of the last 8 days' hours
   counted with a plain ``recorded_at`` filter (no index on it, so a scan).

    .venv/bin/python benchmarks/bench_metrics.py [--backend sqlite|postgresql] [--events N] [--reuse]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa
from flask_migrate import upgrade

from webapp import create_app
from webapp.config import TestConfig
from webapp.domain.alerts import AlertSettings, volume_drops
from webapp.extensions import db
from webapp.models.base import utcnow

SQLITE_PATH = Path("/tmp/activity-ops-bench-metrics.sqlite3")
PG_NAME = "activity_ops_bench_metrics"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TYPES = ("match_won", "match_lost", "tournament_registered", "tournament_checked_in")
SPAN_SECONDS = 8 * 24 * 3600


def app_for(url: str):
    return create_app(TestConfig(), overrides={"SQLALCHEMY_DATABASE_URI": url, "METRICS_TOKEN": "bench",
                                               "QUEUE_URL": "sqlite:////tmp/activity-ops-bench-metrics-queue.sqlite3"})


def load(app, events: int) -> None:
    """Fill the event table in SQL: ids follow recorded_at, a quarter of the events are backfill."""
    now = utcnow()
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        start = (now - timedelta(seconds=SPAN_SECONDS)).replace(tzinfo=None, microsecond=0)
        moment = ("strftime('%Y-%m-%d %H:%M:%S', :start, '+' || CAST(i * :step AS INTEGER) || ' seconds')"
                  " || printf('.%06d', CAST((i * :step - CAST(i * :step AS INTEGER)) * 1000000 AS INTEGER))")
        raw = sqlite3.connect(str(SQLITE_PATH), isolation_level=None)
        raw.execute("PRAGMA foreign_keys = OFF")  # no player rows needed
        raw.execute("BEGIN")
        raw.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last)"
            " INSERT INTO activity_events (player_id, event_type, occurred_at, recorded_at, source_model,"
            " source_id, origin, is_private, metadata)"
            " SELECT 1 + i % 60000, CASE i % 4 WHEN 0 THEN 'match_won' WHEN 1 THEN 'match_lost'"
            " WHEN 2 THEN 'tournament_registered' ELSE 'tournament_checked_in' END,"
            f" {moment}, {moment},"
            " 'match', i, CASE WHEN i % 4 = 0 THEN 'backfill' ELSE 'live' END, 0, '{}' FROM n",
            {"start": start.isoformat(sep=" "), "step": SPAN_SECONDS / events, "last": events - 1},
        )
        raw.execute("COMMIT")
        raw.close()
        return
    with app.app_context(), db.engine.begin() as conn:
        conn.exec_driver_sql("SET session_replication_role = replica")  # no player rows needed
        conn.execute(sa.text(
            "INSERT INTO activity_events (player_id, event_type, occurred_at, recorded_at, source_model,"
            " source_id, origin, is_private, metadata)"
            " SELECT 1 + n % 60000, (ARRAY['match_won','match_lost','tournament_registered',"
            "'tournament_checked_in'])[1 + n % 4], :start + make_interval(secs => n * :step),"
            " :start + make_interval(secs => n * :step), 'match', n,"
            " CASE WHEN n % 4 = 0 THEN 'backfill' ELSE 'live' END, false, '{}'::jsonb"
            " FROM generate_series(0, :last) AS n"
        ), {"start": now - timedelta(seconds=SPAN_SECONDS), "step": SPAN_SECONDS / events, "last": events - 1})
        conn.exec_driver_sql("ANALYZE activity_events")


def prepare(backend: str, events: int, reuse: bool) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{SQLITE_PATH}"
        if reuse and SQLITE_PATH.exists():
            return url
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_NAME}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.exec_driver_sql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_NAME}'").scalar()
            if reuse and exists:
                return url
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{PG_NAME}"')
        admin.dispose()
    app = app_for(url)
    with app.app_context():
        upgrade()
    started = time.perf_counter()
    load(app, events)
    print(f"{backend}: loaded {events:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    return url


def timed(work, rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "max_ms": samples[-1], "n": rounds}


def bench(backend: str, args) -> dict:
    url = prepare(backend, args.events, args.reuse)
    app = app_for(url)
    client = app.test_client()
    results = {}

    def scrape():
        response = client.get("/metrics", headers={"Authorization": "Bearer bench"})
        assert response.status_code == 200 and b"activity_metrics_database_up 1.0" in response.data

    results["scrape"] = timed(scrape, args.rounds * 5)
    with app.app_context():
        session = db.session()
        settings = AlertSettings()
        now = utcnow()

        def check():
            volume_drops(session, settings, now)
            session.rollback()

        results["volume_check"] = timed(check, args.rounds)

        def count_all():
            session.execute(sa.text("SELECT count(*) FROM activity_events")).scalar()
            session.rollback()

        def volume_scan():
            session.execute(
                sa.text("SELECT event_type, count(*) FROM activity_events WHERE recorded_at >= :since"
                        " AND origin = 'live' GROUP BY event_type"),
                {"since": (now - timedelta(days=8)).replace(tzinfo=None) if backend == "sqlite"
                 else now - timedelta(days=8)},
            ).all()
            session.rollback()

        results["count_all"] = timed(count_all, args.rounds)
        results["volume_scan"] = timed(volume_scan, args.rounds)
        db.session.remove()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--events", type=int, default=6_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    for backend in args.backend or ("sqlite", "postgresql"):
        results = bench(backend, args)
        print(f"\n{backend}, {args.events:,} events")
        for name, figures in results.items():
            print(f"  {name:13s} p50 {figures['p50_ms']:9.2f} ms   max {figures['max_ms']:9.2f} ms   (n={figures['n']})")


if __name__ == "__main__":
    main()
