"""Benchmark the GDPR export of one player beside a raw driver streaming the same rows to JSON.

One run, per backend, on a scratch database built by the real migrations:

1. the population: ``--players`` players and ``--tournaments`` tournaments (one
   in ten private), the exported player with ``--events`` events (matches
   against random opponents in random tournaments), a second player with
   ``--small-events`` for the memory comparison, and ``--noise-events`` of
   other players around them;
2. the product: ``write_export_files`` (the job's writer: JSON document and CSV
   of events with names looked up, both hashed, written under temporary names
   and renamed) inside one snapshot, timed ``--repeats`` times;
3. the raw baseline: sqlite3 / psycopg (a named, server-side cursor) reading
   the same player's rows in the same order and writing each one to a JSON
   array with ``json.dumps`` (no CSV, no names, no hashing), timed the same
   number of times, runs alternating with the product's;
4. memory: the product's export of the small and the large player under
   ``tracemalloc``, peak bytes of each (tracemalloc slows the run, so these
   are separate from the timed runs).

Run ``.venv/bin/python benchmarks/bench_gdpr_export.py --help`` for the options;
benchmarks/README.md says how to read the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import psycopg
import sqlalchemy as sa
from bench_core import (
    RESULTS_DIR,
    build_app,
    scratch_database,
)

from benchmarks._support import exit_on_terminate, release, say, server_version

TARGET_SECONDS = 3.0
T0 = datetime(2024, 1, 1, tzinfo=UTC)
INSERT_CHUNK = 10_000


# The population -------------------------------------------------------------


def seed(app, args) -> dict[str, int]:
    """Migrate, then insert players, tournaments and events set-wise; return the two exported players."""
    from flask_migrate import upgrade

    from webapp.extensions import db
    from webapp.models import ActivityEvent, Player, Tournament
    from webapp.models.players import format_public_id

    rng = random.Random(7)
    now = datetime.now(UTC)
    with app.app_context():
        upgrade()
        with db.engine.begin() as conn:
            conn.execute(sa.insert(Player.__table__), [
                {"public_id": format_public_id(2025, n), "username": f"bench{n}",
                 "display_name": f"Bench {n}", "email": f"bench{n}@example.test",
                 "feed_visibility": "private", "created_at": now}
                for n in range(1, args.players + 1)
            ])
            conn.execute(sa.insert(Tournament.__table__), [
                {"name": f"Cup {n}", "starts_at": T0, "ends_at": T0 + timedelta(days=2),
                 "is_private": n % 10 == 0, "created_at": now}
                for n in range(1, args.tournaments + 1)
            ])
            players = [r[0] for r in conn.execute(sa.select(Player.id).order_by(Player.id))]
            tournaments = dict(conn.execute(sa.select(Tournament.id, Tournament.is_private)).all())
            large, small = players[0], players[1]
            source = iter(range(1, 10**9))

            def rows(player_id: int | None, n: int):
                ids = list(tournaments)
                for i in range(n):
                    who = player_id or rng.choice(players[2:])
                    tournament = rng.choice(ids)
                    yield {
                        "player_id": who, "event_type": ("match_won", "match_lost")[i % 2],
                        "occurred_at": T0 + timedelta(minutes=i), "recorded_at": now,
                        "source_model": "match", "source_id": next(source), "origin": "backfill",
                        "origin_id": None, "team_id": None, "tournament_id": tournament,
                        "is_private": tournaments[tournament], "reverses_event_id": None,
                        "metadata": {"round": f"R{i % 5 + 1}", "side": "ab"[i % 2],
                                     "opponent_player_ids": [rng.choice(players)]},
                    }

            for player_id, n in ((large, args.events), (small, args.small_events),
                                 (None, args.noise_events)):
                batch = []
                for row in rows(player_id, n):
                    batch.append(row)
                    if len(batch) == INSERT_CHUNK:
                        conn.execute(sa.insert(ActivityEvent.__table__), batch)
                        batch = []
                if batch:
                    conn.execute(sa.insert(ActivityEvent.__table__), batch)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE" if conn.dialect.name == "postgresql" else "ANALYZE")
    return {"large": large, "small": small}


# The product ------------------------------------------------------------------


def product_export(app, player_id: int, folder: Path, export_id: int) -> tuple[float, float, int, int]:
    """Run the job's writer once; return (wall seconds, CPU seconds, events, JSON bytes)."""
    from webapp.database import begin_snapshot
    from webapp.domain import gdpr_export
    from webapp.extensions import db

    with app.app_context():
        storage = gdpr_export.ExportStorage(str(folder))
        session = db.session()
        started, cpu = time.perf_counter(), time.process_time()
        begin_snapshot(session)
        written = gdpr_export.write_export_files(
            session, storage, export_id, player_id, exported_at=datetime.now(UTC)
        )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        session.rollback()
        written.remove(storage)
        db.session.remove()
    return seconds, cpu, written.streamed.event_count, written.json.bytes


def product_peak(app, player_id: int, folder: Path) -> int:
    """Peak bytes allocated by Python while the product exports ``player_id``."""
    from webapp.database import begin_snapshot
    from webapp.domain import gdpr_export
    from webapp.extensions import db

    with app.app_context():
        session = db.session()
        begin_snapshot(session)
        with open(folder / "peak.json", "wb") as json_out, open(folder / "peak.csv", "wb") as csv_out:
            tracemalloc.start()
            try:
                gdpr_export.stream_export(session, player_id, json_out, csv_out,
                                          exported_at=datetime.now(UTC))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        session.rollback()
        db.session.remove()
    return peak


# The raw baseline -----------------------------------------------------------

RAW_SQL = (
    "SELECT id, event_type, occurred_at, recorded_at, source_model, source_id, origin, origin_id, "
    "team_id, tournament_id, is_private, metadata, reverses_event_id FROM activity_events "
    "WHERE player_id = {p} ORDER BY occurred_at, id"
)


def _write_raw(rows, out) -> int:
    n = 0
    out.write("[")
    for (id_, type_, occurred, recorded, model, source_id, origin, origin_id, team, tournament,
         private, metadata, reverses) in rows:
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        out.write(("," if n else "") + "\n" + json.dumps({
            "id": id_, "type": type_, "occurred_at": str(occurred), "recorded_at": str(recorded),
            "source": {"model": model, "id": source_id}, "origin": {"kind": origin, "id": origin_id},
            "team_id": team, "tournament_id": tournament, "private": bool(private),
            "metadata": metadata, "reverses_event_id": reverses,
        }, separators=(",", ":")))
        n += 1
    out.write("\n]\n")
    return n


def raw_export(url: str, player_id: int, folder: Path) -> tuple[float, float, int]:
    """Stream the player's rows to a JSON array through the bare driver; return (wall s, CPU s, events)."""
    path = folder / "raw.json"
    started, cpu = time.perf_counter(), time.process_time()
    with open(path, "w", encoding="utf-8") as out:
        if url.startswith("sqlite"):
            conn = sqlite3.connect(url.removeprefix("sqlite:///"))
            try:
                n = _write_raw(conn.execute(RAW_SQL.format(p="?"), (player_id,)), out)
            finally:
                conn.close()
        else:
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn, \
                    conn.cursor(name="raw_export") as cursor:
                cursor.itersize = 2_000
                cursor.execute(RAW_SQL.format(p="%s"), (player_id,))
                n = _write_raw(cursor, out)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    path.unlink()
    return seconds, cpu, n


# Running ------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"min": ordered[0], "p50": statistics.median(ordered), "max": ordered[-1],
            "runs": len(ordered)}


def run_backend(backend: str, args) -> dict:
    with scratch_database(backend) as url, tempfile.TemporaryDirectory(prefix="gdpr-bench-") as tmp:
        folder = Path(tmp)
        app = build_app(url)
        say(f"{backend}: seeding {args.events:,} + {args.small_events:,} + {args.noise_events:,} events")
        players = seed(app, args)
        product, raw, product_cpu, raw_cpu = [], [], [], []
        product_bytes = 0
        for run in range(args.repeats):
            seconds, cpu, n, product_bytes = product_export(app, players["large"], folder, run + 1)
            assert n == args.events, (n, args.events)
            product.append(seconds)
            product_cpu.append(cpu)
            seconds, cpu, n = raw_export(url, players["large"], folder)
            assert n == args.events
            raw.append(seconds)
            raw_cpu.append(cpu)
            say(f"{backend}: run {run + 1}: product {product[-1]:.3f} s (CPU {product_cpu[-1]:.3f}), "
                 f"raw {raw[-1]:.3f} s (CPU {raw_cpu[-1]:.3f}), load {os.getloadavg()[0]:.1f}")
        peak_small = product_peak(app, players["small"], folder)
        peak_large = product_peak(app, players["large"], folder)
        figures = {
            "backend": backend,
            "server": server_version(app),
            "events": args.events,
            "product_seconds": _summary(product),
            "raw_seconds": _summary(raw),
            "product_cpu_seconds": _summary(product_cpu),
            "raw_cpu_seconds": _summary(raw_cpu),
            "ratio_p50": statistics.median(product) / statistics.median(raw),
            "cpu_ratio_p50": statistics.median(product_cpu) / statistics.median(raw_cpu),
            "product_json_bytes": product_bytes,
            "peak_bytes": {str(args.small_events): peak_small, str(args.events): peak_large},
            "load_average": os.getloadavg(),
        }
        release(app)
        return figures


def format_table(figures: dict) -> str:
    p, r = figures["product_seconds"], figures["raw_seconds"]
    pc, rc = figures["product_cpu_seconds"], figures["raw_cpu_seconds"]
    (small, peak_small), (large, peak_large) = figures["peak_bytes"].items()
    met = "met" if p["p50"] < TARGET_SECONDS else "**not met**"
    load = "/".join(f"{x:.1f}" for x in figures["load_average"])
    return "\n".join([
        f"### {figures['backend']} ({figures['server']}), load {load}",
        "",
        "| | min | p50 | max |",
        "| --- | ---: | ---: | ---: |",
        (f"| product export of {figures['events']:,} events (JSON + CSV), s "
         f"| {p['min']:.3f} | {p['p50']:.3f} | {p['max']:.3f} |"),
        f"| raw driver to JSON, s | {r['min']:.3f} | {r['p50']:.3f} | {r['max']:.3f} |",
        f"| product, client CPU s | {pc['min']:.3f} | {pc['p50']:.3f} | {pc['max']:.3f} |",
        f"| raw driver, client CPU s | {rc['min']:.3f} | {rc['p50']:.3f} | {rc['max']:.3f} |",
        "",
        (f"Ratio product / raw at p50: {figures['ratio_p50']:.1f}x wall, "
         f"{figures['cpu_ratio_p50']:.1f}x client CPU, over {p['runs']} runs; "
         f"target < {TARGET_SECONDS:.0f} s: {met}. JSON document {figures['product_json_bytes']:,} bytes."),
        (f"Peak Python memory while exporting: {int(small):,} events {peak_small / 2**20:.1f} MiB, "
         f"{int(large):,} events {peak_large / 2**20:.1f} MiB."),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--events", type=int, default=100_000, help="events of the exported player")
    parser.add_argument("--small-events", type=int, default=10_000,
                        help="events of the player of the memory comparison")
    parser.add_argument("--noise-events", type=int, default=100_000, help="other players' events")
    parser.add_argument("--players", type=int, default=2_000)
    parser.add_argument("--tournaments", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-save", action="store_true", help="do not write JSON to benchmarks/results/")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_terminate)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = [run_backend(backend, args) for backend in backends]
    for figures in results:
        print(format_table(figures))
        print()
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"gdpr_export-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(results, indent=2))
        say(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
