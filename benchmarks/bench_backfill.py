"""Benchmark the backfill's throughput beside a raw-driver baseline writing the same rows.

One run, per backend, on a scratch database built by the real migrations:

1. the source history: ``generate_demo_data`` at ``--scale``, whose events and
   stats are then deleted, leaving the platform records a backfill reads;
2. the product: a backfill run queued with ``start_backfill`` (peak window off,
   ``--batch-size`` records per batch, no pause) and run by ``execute_run`` in a
   child process, which reports its events/s and its peak RSS, and that of
   the preparation process the backfill starts (see ``webapp.jobs.preparation``);
3. the raw baseline: the events the backfill wrote are read into memory (times
   as datetimes, metadata as dicts), the events and stats deleted, and the same
   rows written again by sqlite3/psycopg in the backfill's own transactions
   (its ledger's event id ranges) with the product's SQL semantics: converted
   for the driver, inserted with ``ON CONFLICT DO NOTHING RETURNING``, and the
   deltas of the rows the database says were new upserted into the stats.

Run ``.venv/bin/python benchmarks/bench_backfill.py --help`` for the options;
the README beside this file says how to read the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import resource
import signal
import subprocess
import sys
import time
from bisect import bisect_left, bisect_right
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import sqlalchemy as sa
from bench_core import (
    EVENT_COLUMNS,
    RESULTS_DIR,
    RawRecorder,
    build_app,
    scratch_database,
)

from benchmarks._support import (
    exit_on_terminate,
    peak_rss_mb,
    release,
    say,
    server_version,
    sqlite_time,
)
from webapp.models.stats import STAT_NAMES

# Targets from the backfill issue.
BACKFILL_RATIO = 0.70
BACKFILL_PEAK_MB = 300
# generate_demo_data's scale at which the backfill writes about 200,000 events.
DEFAULT_SCALE = 2.4


# The source history ------------------------------------------------------------


def build_history(app, scale: float) -> dict:
    """Migrate, write the demo history, then delete its events and stats: what is left is the source."""
    from flask_migrate import upgrade

    from webapp.domain.demo import generate_demo_data
    from webapp.extensions import db
    from webapp.transaction import unit_of_work

    with app.app_context():
        upgrade()
        session = db.session()
        with unit_of_work(session):
            summary = generate_demo_data(session, scale=scale)
        db.session.remove()
        wipe_events(db.engine)
        db.engine.dispose()
    return {"scale": scale, "matches": sum(summary.matches.values()),
            "registrations": sum(summary.registrations.values()),
            "tournament_results": summary.tournament_results, "demo_events": summary.events_recorded}


def wipe_events(engine: sa.Engine) -> None:
    """Delete every event, finding and stat row, and refresh the planner's statistics."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        for table in ("data_quality_findings", "activity_events", "player_stats"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if postgres else "ANALYZE")


# The product: a backfill run in a child process ----------------------------------------


def measure_backfill(url: str, batch_size: int, profile_top: int) -> dict:
    """Run the backfill in a child process; return its figures."""
    command = [sys.executable, str(Path(__file__).resolve()), "--backfill-child", url,
               "--batch-size", str(batch_size), "--profile-top", str(profile_top)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"backfill child failed:\n{completed.stderr}")
    if completed.stderr.strip():
        print(completed.stderr, file=sys.stderr)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def backfill_child(url: str, batch_size: int, profile_top: int) -> None:
    """Queue and run one backfill of all history; print its figures as JSON."""
    from webapp.domain import backfill
    from webapp.domain.audit import SYSTEM
    from webapp.extensions import db
    from webapp.jobs.runner import execute_run
    from webapp.transaction import unit_of_work

    app = build_app(url)
    with app.app_context():
        session = db.session()
        if profile_top:
            profile_one_batch(session, batch_size, profile_top)
        with unit_of_work(session):
            run_id = backfill.start_backfill(
                session, SYSTEM, backfill.BackfillScope(),
                safeguards=backfill.Safeguards(now=datetime.now(UTC), peak_window="off"),
                batch_size=batch_size, pause_seconds=0,
            ).id
        gc.collect()
        before = peak_rss_mb()
        start, cpu_start = time.perf_counter(), time.process_time()
        run = execute_run(session, run_id)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        status, result = run.status, dict(run.result or {})
        lines = backfill.ledger(session, run_id)
        session.rollback()
        db.session.remove()
        db.engine.dispose()
    if status != "succeeded":
        raise RuntimeError(f"backfill run {run_id} ended {status}")
    counts = backfill.ledger_totals(lines)
    # From the first batch's start to the last one's end: on PostgreSQL a batch is
    # read while the one before it is written, so the batches' own spans overlap.
    batch_seconds = (max(line.finished_at for line in lines) - min(line.started_at for line in lines)).total_seconds()
    print(json.dumps({
        "run_id": run_id, "batch_size": batch_size, "batches": len(lines),
        "rows_read": counts.rows_read, "events": counts.events_inserted,
        "duplicates": counts.duplicates, "failed": counts.failed,
        "parity_ok": result.get("parity_ok"),
        "seconds": seconds, "cpu_seconds": cpu, "batch_seconds": batch_seconds,
        "events_per_s": counts.events_inserted / seconds,
        "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
        # The preparation process, ended and waited for: the largest child's peak
        # (counting, when forked, the pages it shares with this process).
        "preparation_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "batches_prepared_apart": result.get("batches_prepared_apart", 0),
        # The baseline writes the same rows in the same transactions.
        "event_ranges": [[line.first_event_id, line.last_event_id] for line in lines
                         if line.committed and line.first_event_id is not None],
    }))


def profile_one_batch(session, batch_size: int, top: int) -> None:
    """Profile one backfill batch (rolled back) and print its top costs to stderr."""
    from webapp.domain import backfill
    from webapp.domain.audit import SYSTEM

    run_id = backfill.start_backfill(
        session, SYSTEM, backfill.BackfillScope(),
        safeguards=backfill.Safeguards(now=datetime.now(UTC), peak_window="off"),
        batch_size=batch_size, pause_seconds=0,
    ).id
    profiler = cProfile.Profile()
    profiler.enable()
    line = backfill.process_batch(session, run_id, backfill.BackfillScope(), backfill.START, batch_size, 1)
    profiler.disable()
    session.rollback()
    out = io.StringIO()
    out.write(f"profile of one batch: {line.counts.rows_read} records, "
              f"{line.counts.events_inserted} events\n")
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    out.write("\n--- by own time ---\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue(), file=sys.stderr, flush=True)


# The raw baseline --------------------------------------------------------------------


def read_events(url: str, backend: str) -> list[tuple]:
    """Read every stored event, in id order, as the values recording starts from.

    Times come back as aware datetimes and metadata as dicts, so turning them
    into what the database stores (text times and JSON on SQLite, JSON on
    PostgreSQL) is part of the baseline's timed work, as it is of the product's.
    """
    raw = RawRecorder(backend, url, {})
    try:
        cursor = raw.conn.cursor()
        cursor.execute(f"SELECT id, {', '.join(EVENT_COLUMNS)} FROM activity_events ORDER BY id")
        rows = cursor.fetchall()
    finally:
        raw.close()
    if backend == "postgresql":
        return rows
    occurred, private, metadata = (
        1 + EVENT_COLUMNS.index(c) for c in ("occurred_at", "is_private", "metadata")
    )
    decoded = []
    for row in rows:
        row = list(row)
        row[occurred] = datetime.fromisoformat(row[occurred]).replace(tzinfo=UTC)
        row[private] = bool(row[private])
        row[metadata] = json.loads(row[metadata])
        decoded.append(tuple(row))
    return decoded


# Rows per SQLite insert statement, as recording writes them.
RAW_SQLITE_ROWS = 500
_KEY = "(player_id, event_type, source_model, source_id)"
# What the product needs back from its insert: which rows were new (its ids for
# the ledger), so that only those rows' deltas reach the stats.
_RETURNING = f" ON CONFLICT {_KEY} DO NOTHING RETURNING id, player_id, event_type, team_id, is_private"
_POSTGRES_CASTS = ("bigint", "text", "timestamptz", "timestamptz", "text", "bigint", "text", "bigint",
                   "bigint", "bigint", "boolean", "jsonb", "bigint")


def measure_raw(url: str, backend: str, stored: list[tuple], ranges: list[list[int]]) -> dict:
    """Insert ``stored`` again in the backfill's own transactions, with the product's SQL semantics.

    Each of the backfill's batches (its ledger's event id ranges) is one
    transaction here too: the batch's rows converted for the driver, inserted
    with ``ON CONFLICT DO NOTHING RETURNING`` (500 rows a statement on SQLite,
    one array per column on PostgreSQL), and the summed deltas of the rows the
    database says were new upserted into both stat scopes.
    """
    raw = RawRecorder(backend, url, {})
    columns = ", ".join(EVENT_COLUMNS)
    if backend == "sqlite":
        one_row = "(" + ", ".join(["?"] * len(EVENT_COLUMNS)) + ")"
        full = f"INSERT INTO activity_events ({columns}) VALUES {', '.join([one_row] * RAW_SQLITE_ROWS)}"
    else:
        names = ", ".join(f"c{i}" for i in range(len(EVENT_COLUMNS)))
        arrays = ", ".join(f"%(c{i})b::{cast}[]" for i, cast in enumerate(_POSTGRES_CASTS))
        insert_arrays = (f"INSERT INTO activity_events ({columns}) SELECT {names} "
                         f"FROM unnest({arrays}) AS g({names})" + _RETURNING)
    width = len(STAT_NAMES)
    ids = [row[0] for row in stored]
    batches = [stored[bisect_left(ids, first) : bisect_right(ids, last)] for first, last in ranges]
    try:
        inserted = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in batches:
            now = datetime.now(UTC)
            cursor = raw._begin()
            if backend == "sqlite":
                stamp = sqlite_time(now)
                rows = [
                    (p, t, sqlite_time(at), stamp, m, s, o, oid, team, tid, int(private),
                     json.dumps(meta), rev)
                    for _id, p, t, at, _rec, m, s, o, oid, team, tid, private, meta, rev in batch
                ]
                new = []
                for offset in range(0, len(rows), RAW_SQLITE_ROWS):
                    chunk = rows[offset : offset + RAW_SQLITE_ROWS]
                    head = full if len(chunk) == RAW_SQLITE_ROWS else (
                        f"INSERT INTO activity_events ({columns}) VALUES {', '.join([one_row] * len(chunk))}"
                    )
                    cursor.execute(head + _RETURNING, [v for row in chunk for v in row])
                    new.extend(cursor.fetchall())
            else:
                stamp = now
                rows = [
                    (p, t, at, now, m, s, o, oid, team, tid, private, json.dumps(meta), rev)
                    for _id, p, t, at, _rec, m, s, o, oid, team, tid, private, meta, rev in batch
                ]
                cursor.execute(insert_arrays, {f"c{i}": list(c) for i, c in enumerate(zip(*rows))})
                new = cursor.fetchall()
            inserted += len(new)
            totals: dict[tuple[int, str], list[int]] = {}
            for _id, player, event_type, team, private in new:
                deltas = raw.deltas[(event_type, team is not None)]
                for scope in ("all",) if private else ("all", "public"):
                    values = totals.get((player, scope))
                    if values is None:
                        values = totals[(player, scope)] = [0] * width
                    for i, d in enumerate(deltas):
                        values[i] += d
            cursor.executemany(
                raw.upsert_one,
                [(p, scope, *values, stamp) for (p, scope), values in sorted(totals.items())],
            )
            raw._commit()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        raw.close()
    return {"events": inserted, "batches": len(batches), "seconds": seconds, "cpu_seconds": cpu,
            "events_per_s": inserted / seconds}


def check_same_stats(engine: sa.Engine, expected: dict) -> bool:
    """Say whether the stats the raw baseline wrote equal the backfill's."""
    return stats_snapshot(engine) == expected


def stats_snapshot(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT player_id, scope, {', '.join(STAT_NAMES)} FROM player_stats"
        ).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


# Running and reporting ----------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> dict:
    figures: dict[str, Any] = {"backend": backend, "load_before": os.getloadavg()}
    with scratch_database(backend) as url:
        app = build_app(url)
        say(f"{backend}: source history at scale {args.scale}")
        figures["history"] = build_history(app, args.scale)
        figures["server"] = server_version(app)
        say(f"{backend}: backfill, batches of {args.batch_size}")
        figures["backfill"] = measure_backfill(url, args.batch_size, args.profile)
        engine = sa.create_engine(url)
        try:
            stored = read_events(url, backend)
            backfill_stats = stats_snapshot(engine)
            wipe_events(engine)
            say(f"{backend}: the raw driver writing the same {len(stored):,} events")
            figures["raw"] = measure_raw(url, backend, stored, figures["backfill"]["event_ranges"])
            figures["raw"]["same_stats"] = check_same_stats(engine, backfill_stats)
        finally:
            engine.dispose()
            release(app)
    figures["load_after"] = os.getloadavg()
    return figures


def _ok(passed: bool) -> str:
    return "yes" if passed else "**no**"


def format_table(figures: dict) -> str:
    """Render one backend's figures as a Markdown table."""
    load = "/".join(f"{x:.1f}" for x in figures["load_before"])
    b, r = figures["backfill"], figures["raw"]
    ratio = b["events_per_s"] / r["events_per_s"]
    h = figures["history"]
    source = (f"Source: demo history at scale {h['scale']:g} ({h['registrations']:,} registrations, "
              f"{h['matches']:,} matches, {h['tournament_results']:,} results); "
              f"{b['rows_read']:,} records read in {b['batches']} batches of {b['batch_size']:,}.")
    batches_only = b["events"] / b["batch_seconds"]
    lines = [
        f"### {figures['backend']} ({figures.get('server', '')}; load average at start {load})",
        "",
        source,
        "",
        "| measure | backfill | raw driver | backfill/raw | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| events written | {b['events']:,} | {r['events']:,} | | | |",
        f"| wall time (s) | {b['seconds']:.1f} | {r['seconds']:.1f} | | | |",
        f"| CPU of the writing process (s) | {b['cpu_seconds']:.1f} | {r['cpu_seconds']:.1f} | | | |",
    ]
    lines.append(f"| events/s | {b['events_per_s']:,.0f} | {r['events_per_s']:,.0f} | {ratio:.0%} | "
                 f">= {BACKFILL_RATIO:.0%} of raw | {_ok(ratio >= BACKFILL_RATIO)} |")
    lines.append(f"| events/s counting only the batches (no start, no parity check) | "
                 f"{batches_only:,.0f} | | {batches_only / r['events_per_s']:.0%} | | |")
    lines.append(f"| peak RSS of the backfill process (MB) | {b['peak_rss_mb']:.0f} | | | "
                 f"< {BACKFILL_PEAK_MB} MB | {_ok(b['peak_rss_mb'] < BACKFILL_PEAK_MB)} |")
    lines.append(f"| peak RSS of the preparation process (MB; {b.get('batches_prepared_apart', 0)} of "
                 f"{b['batches']} batches prepared there) | {b.get('preparation_peak_rss_mb', 0):.0f} | | | "
                 f"< {BACKFILL_PEAK_MB} MB | {_ok(b.get('preparation_peak_rss_mb', 0) < BACKFILL_PEAK_MB)} |")
    lines.append(f"| parity check / same stats from both sides | {_ok(bool(b['parity_ok']))} | "
                 f"{_ok(r['same_stats'])} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                        help="demo history scale (the default gives about 200,000 events)")
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one batch first (rolled back) and print its top N costs")
    parser.add_argument("--no-save", action="store_true", help="do not write JSON to benchmarks/results/")
    parser.add_argument("--backfill-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--profile-top", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_terminate)

    if args.backfill_child:
        backfill_child(args.backfill_child, args.batch_size, args.profile_top)
        return 0

    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "options": {k: v for k, v in vars(args).items() if k not in ("backfill_child", "profile_top")},
        "backends": {},
    }
    for backend in backends:
        results["backends"][backend] = run_backend(backend, args)
        print(format_table(results["backends"][backend]) + "\n", flush=True)
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"backfill-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        say(f"figures written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
