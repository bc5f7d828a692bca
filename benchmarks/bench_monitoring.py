"""Benchmark the monitoring overview's chart endpoints on 6,000,000 events, beside the raw rollup query.

One run, per backend, on a scratch database built by the real migrations and
loaded through the raw driver with ``--events`` activity events recorded over
the last ``--days`` days (so every minute of the last three days and every day
of the ranges holds events of every type and origin), then folded into the
rollups by the real ``fold_event_volume`` (its time is reported: the catch-up
a new installation pays once). Latency histograms for ``--days`` days, two
reconciliation runs a day and a running backfill with its ledger are added.

For each chart and each range, ``--samples`` requests go through the whole
Flask stack (signed-in session, role check, rollup queries, figure JSON and
table rendering) as an engineer sees them. Beside them, ``raw`` is the event
volume query alone, written by hand and run through sqlite3 or psycopg: the
floor. The target: every chart endpoint under 100 ms at p95 for every range.

    .venv/bin/python benchmarks/bench_monitoring.py [--backend sqlite|postgresql] [--reuse]

``--reuse`` keeps the loaded databases (in /tmp and on the local PostgreSQL)
and loads them only when they are missing or hold a different count.
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg

from benchmarks._support import migrated_app, percentiles, scratch_database, sqlite_time
from webapp import create_app
from webapp.config import TestConfig
from webapp.domain import monitoring
from webapp.domain.audit import SYSTEM
from webapp.domain.staff import create_staff
from webapp.extensions import db
from webapp.models import BackfillBatch, JobRun, ReconciliationRun
from webapp.observability import OPERATIONS
from webapp.transaction import unit_of_work
from webapp.web.charts import CHARTS

SQLITE_PATH = Path("/tmp/activity-ops-bench-monitoring.sqlite3")
PG_NAME = "activity_ops_bench_monitoring"
PASSWORD = "benchmark password, long enough"
EVENT_TYPES = ("match_won", "match_lost", "match_won", "match_lost", "tournament_checked_in",
               "match_won_reversed")

RAW_SQL = (
    "SELECT bucket, event_type, sum(settled + pending) FROM monitoring_event_volume"
    " WHERE grain = {p} AND bucket BETWEEN {p} AND {p} GROUP BY bucket, event_type"
)


def generate_events(args, now: datetime):
    """Yield event rows in id order, recorded evenly over the last ``args.days`` days."""
    rng = random.Random(args.seed)
    start = now - timedelta(days=args.days)
    span = (now - start).total_seconds()
    for event_id in range(1, args.events + 1):
        recorded = start + timedelta(seconds=span * event_id / args.events)
        kind = EVENT_TYPES[rng.randrange(len(EVENT_TYPES))]
        origin = "backfill" if event_id % 3 == 0 else "live"
        yield (event_id, rng.randrange(1, args.players + 1), kind, recorded - timedelta(minutes=5),
               recorded, "match", event_id, origin, 7 if origin == "backfill" else None, False, "{}")


def load_postgres(url: str, args, now: datetime) -> None:
    with psycopg.connect(url, autocommit=False) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY players (id, public_id, username, display_name, email, feed_visibility, "
                          "created_at) FROM STDIN") as copy:
                for n in range(1, args.players + 1):
                    copy.write_row((n, f"DC-26-{n:06d}", f"player{n}", f"Player {n}", f"p{n}@example.test",
                                    "public", now))
            with cur.copy("COPY activity_events (id, player_id, event_type, occurred_at, recorded_at, "
                          "source_model, source_id, origin, origin_id, is_private, metadata) FROM STDIN") as copy:
                for row in generate_events(args, now):
                    copy.write_row(row)
            for table in ("players", "activity_events"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def load_sqlite(path: Path, args, now: datetime) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO players (id, public_id, username, display_name, email, feed_visibility, created_at)"
        " VALUES (?, ?, ?, ?, ?, 'public', ?)",
        ((n, f"DC-26-{n:06d}", f"player{n}", f"Player {n}", f"p{n}@example.test", sqlite_time(now))
         for n in range(1, args.players + 1)),
    )
    conn.executemany(
        "INSERT INTO activity_events (id, player_id, event_type, occurred_at, recorded_at, source_model,"
        " source_id, origin, origin_id, is_private, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((r[0], r[1], r[2], sqlite_time(r[3]), sqlite_time(r[4]), *r[5:9], int(r[9]), r[10])
         for r in generate_events(args, now)),
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def add_history(app, args, now: datetime) -> None:
    """Fold the events, and add latency histograms, reconciliation runs and a running backfill."""
    rng = random.Random(args.seed + 1)
    with app.app_context():
        session = db.session()
        started = time.perf_counter()
        with unit_of_work(session):
            folded = monitoring.fold_event_volume(session, now=now + timedelta(hours=1))
        print(f"  folded {folded.settled_events:,} events in {time.perf_counter() - started:.1f} s", flush=True)
        first_minute = monitoring.epoch_minute(now) - args.days * monitoring.MINUTES_PER_DAY
        with db.engine.begin() as conn:
            for day in range(args.days):
                counts = {}
                for minute in range(0, monitoring.MINUTES_PER_DAY, 7):
                    for operation in OPERATIONS:
                        for bin_ in (4, 6, 8, 11, 14):
                            counts[(first_minute + day * monitoring.MINUTES_PER_DAY + minute, operation, bin_)] = \
                                rng.randrange(1, 40)
                monitoring.add_latency_counts(conn, counts)
        with unit_of_work(session):
            for day in range(args.days):
                for hour in (3, 15):
                    at = now - timedelta(days=args.days - day) + timedelta(hours=hour)
                    session.add(ReconciliationRun(
                        started_at=at, finished_at=at + timedelta(minutes=4),
                        status="failed" if rng.random() < 0.05 else "succeeded",
                        players_checked=args.players, players_drifted=rng.randrange(0, 30)))
            run = JobRun(kind="backfill", status="running", started_at=now - timedelta(hours=1),
                         progress_done=40_000, progress_total=100_000)
            session.add(run)
            session.flush()
            for n in range(1, 81):
                session.add(BackfillBatch(run_id=run.id, batch_no=n, events_inserted=1_000,
                                          started_at=now - timedelta(minutes=60 - n / 2)))
            create_staff(session, SYSTEM, "bench@staff.test", ["engineer"], PASSWORD)


def prepare(backend: str, args, now: datetime) -> str:
    url = scratch_database(backend, SQLITE_PATH, PG_NAME, reuse=args.reuse)
    app, count = migrated_app(url)
    if count != args.events:
        if count:
            raise SystemExit(f"{backend}: the scratch database holds {count:,} events; run without --reuse")
        print(f"{backend}: loading {args.events:,} events over {args.days} days", flush=True)
        started = time.perf_counter()
        if backend == "sqlite":
            load_sqlite(SQLITE_PATH, args, now)
        else:
            load_postgres(url.replace("+psycopg", ""), args, now)
        print(f"  loaded in {time.perf_counter() - started:.0f} s", flush=True)
        add_history(app, args, now)
    with app.app_context():
        db.engine.dispose()
    return url


def bench_raw(backend: str, url: str, args, now: datetime) -> dict[str, dict[str, float]]:
    results = {}
    for span in monitoring.RANGES.values():
        step = 1 if span.grain == "minute" else monitoring.MINUTES_PER_DAY
        last = monitoring.epoch_minute(now)
        last = last if span.grain == "minute" else monitoring.day_of(last)
        params = (span.grain, last - (span.points - 1) * step, last)
        samples = []
        if backend == "sqlite":
            conn = sqlite3.connect(SQLITE_PATH)
            sql = RAW_SQL.format(p="?")
            for _ in range(args.samples):
                started = time.perf_counter()
                conn.execute("BEGIN")
                conn.execute(sql, params).fetchall()
                conn.execute("COMMIT")
                samples.append(time.perf_counter() - started)
            conn.close()
        else:
            with psycopg.connect(url.replace("+psycopg", "")) as conn:
                sql = RAW_SQL.format(p="%s")
                for _ in range(args.samples):
                    started = time.perf_counter()
                    conn.execute(sql, params).fetchall()
                    conn.rollback()
                    samples.append(time.perf_counter() - started)
        results[span.key] = percentiles(samples)
    return results


def bench_charts(url: str, args) -> dict[tuple[str, str], dict[str, float]]:
    app = create_app(TestConfig(), overrides={"SQLALCHEMY_DATABASE_URI": url, "LOGIN_RATE_LIMIT": "1000 per minute"})
    client = app.test_client()
    page = client.get("/auth/sign-in").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post("/auth/sign-in", data={"email": "bench@staff.test", "password": PASSWORD,
                                                  "csrf_token": token})
    assert response.status_code == 302, response.text
    results = {}
    for name in CHARTS:
        for key in monitoring.RANGES:
            target = f"/admin/monitoring/chart/{name}?range={key}"
            for _ in range(3):  # warm the statement caches
                assert client.get(target).status_code == 200
            samples = []
            for _ in range(args.samples):
                started = time.perf_counter()
                response = client.get(target, headers={"HX-Request": "true"})
                samples.append(time.perf_counter() - started)
                assert response.status_code == 200
            results[(name, key)] = percentiles(samples)
    with app.app_context():
        db.engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--events", type=int, default=6_000_000)
    parser.add_argument("--players", type=int, default=60_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    now = datetime.now(UTC)
    for backend in args.backend or ["sqlite", "postgresql"]:
        url = prepare(backend, args, now)
        raw = bench_raw(backend, url, args, now)
        charts = bench_charts(url, args)
        print(f"\n{backend}: {args.events:,} events, {args.samples} requests per chart and range (ms)")
        print(f"{'what':<28}{'p50':>8}{'p95':>8}{'p99':>8}{'mean':>8}  vs raw p95")
        for key, figures in raw.items():
            print(f"{'raw volume query ' + key:<28}" + "".join(f"{figures[q]:>8.2f}" for q in ("p50", "p95", "p99", "mean")))
        worst = 0.0
        for (name, key), figures in charts.items():
            worst = max(worst, figures["p95"])
            ratio = figures["p95"] / raw[key]["p95"] if name == "volume" else None
            print(f"{name + ' ' + key:<28}" + "".join(f"{figures[q]:>8.2f}" for q in ("p50", "p95", "p99", "mean"))
                  + (f"  {ratio:6.1f}x" if ratio else ""))
        print(f"worst p95 {worst:.1f} ms: {'meets' if worst < 100 else 'MISSES'} the 100 ms target", flush=True)


if __name__ == "__main__":
    main()
