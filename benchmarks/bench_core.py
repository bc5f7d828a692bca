"""Benchmark event recording and reconciliation against raw-driver baselines.

One run measures, per backend, on scratch databases built by the real migrations:

1. single-event recording: ``record_event`` in its own ``unit_of_work`` per event,
   beside sqlite3/psycopg doing the same SQL in one transaction per event;
2. batch recording: ``record_events`` per batch, beside a raw ``executemany``
   of the same batch size (and, on PostgreSQL, ``COPY`` as a second reference);
3. reconciliation: ``find_drift`` over the whole table, beside the same
   set-based SQL run through the raw driver;
4. peak memory of a 1M-event ingest through ``record_events``, in a subprocess.

Run ``.venv/bin/python benchmarks/bench_core.py --help`` for the options; the
README beside this file says how to read the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb

from benchmarks._support import (
    exit_on_terminate,
    peak_rss_mb,
    release,
    say,
    server_version,
    sqlite_time,
)
from webapp.database import SQLITE_BUSY_TIMEOUT_MS
from webapp.models.stats import STAT_NAMES

RESULTS_DIR = Path(__file__).resolve().parent / "results"
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
T0 = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)

# Targets from the performance issue.
SINGLE_P99_MS = 3.0
SINGLE_RATIO = 0.40
BATCH_RATIO = 0.70
RECONCILE_SECONDS_PER_6M = 5.0
INGEST_PEAK_MB = 300

EVENT_COLUMNS = (
    "player_id", "event_type", "occurred_at", "recorded_at", "source_model", "source_id", "origin",
    "origin_id", "team_id", "tournament_id", "is_private", "metadata", "reverses_event_id",
)
MATCH_TYPES = ("match_won", "match_lost")


# Scratch databases ----------------------------------------------------------


def _admin_engine() -> sa.Engine:
    return sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """Yield the URL of a new empty database, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="activity-ops-bench-") as folder:
            yield f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        return
    name = f"activity_ops_bench_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def build_app(url: str):
    """Build the product's app on ``url`` (no migrations run)."""
    from webapp import create_app
    from webapp.config import BaseConfig

    return create_app(BaseConfig(), overrides={"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench"})


def migrate_and_seed(app, players: int, tournaments: int) -> Population:
    """Build the schema with the real migrations and add players and tournaments."""
    from flask_migrate import upgrade

    from webapp.extensions import db
    from webapp.models import Player, Tournament
    from webapp.models.players import format_public_id

    with app.app_context():
        upgrade()
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(
                sa.insert(Player.__table__),
                [
                    {
                        "public_id": format_public_id(2025, n), "username": f"bench{n}",
                        "display_name": f"Bench {n}", "email": f"bench{n}@example.test",
                        "feed_visibility": "private", "created_at": now,
                    }
                    for n in range(1, players + 1)
                ],
            )
            conn.execute(
                sa.insert(Tournament.__table__),
                [
                    {
                        "name": f"Bench Cup {n}", "is_private": n % 10 == 0, "is_team_based": False,
                        "awards_winner": True, "starts_at": T0, "ends_at": T0 + timedelta(days=2),
                        "created_at": now,
                    }
                    for n in range(tournaments)
                ],
            )
            player_ids = list(conn.scalars(sa.select(Player.id).order_by(Player.id)))
            privacy = dict(conn.execute(sa.select(Tournament.id, Tournament.is_private)).all())
        db.session.remove()
    return Population(player_ids, privacy)


class Population:
    """Seeded players and tournaments, and a source of facts about them."""

    def __init__(self, player_ids: list[int], tournament_privacy: dict[int, bool]) -> None:
        self.player_ids = player_ids
        self.tournament_ids = sorted(tournament_privacy)
        self.tournament_privacy = tournament_privacy

    def facts(self, first_source_id: int, count: int, seed: int, live: bool = False) -> list:
        """Return ``count`` match results of random players, each a new fact.

        ``live`` facts happened minutes ago, as results reported while their
        matches finish do; the others are history, from ``T0`` on.
        """
        from webapp.domain.recording import NewEvent

        rng = random.Random(seed)
        players, tournaments = self.player_ids, self.tournament_ids
        start = datetime.now(UTC) - timedelta(minutes=10) if live else T0 + timedelta(seconds=first_source_id)
        facts = []
        for i in range(count):
            source_id = first_source_id + i
            facts.append(
                NewEvent(
                    player_id=rng.choice(players),
                    event_type=MATCH_TYPES[source_id % 2],
                    occurred_at=start + timedelta(milliseconds=i) if live else start + timedelta(seconds=i),
                    source_model="match",
                    source_id=source_id,
                    tournament_id=rng.choice(tournaments),
                    metadata={"round": "R1", "side": "a", "opponent_player_ids": [rng.choice(players)]},
                )
            )
        return facts


# Raw-driver baselines --------------------------------------------------------


class RawRecorder:
    """The same writes as the product, straight through the DB-API driver.

    It trusts its input: no validation and no Python-side lookups. A single
    event runs the product's own statements for a live result (``record_one``:
    the insert that checks the player and tournament exist and takes privacy
    from the tournament, then the stats upsert, which rides in the insert on
    PostgreSQL), or the least any recorder could run (``record_one_plain``: a
    plain insert, with privacy from an in-memory map of the seeded tournaments).
    Batches are plain inserts.
    """

    def __init__(self, backend: str, url: str, tournament_privacy: dict[int, bool]) -> None:
        from webapp.domain.taxonomy import EVENT_TYPES

        self.backend = backend
        self.privacy = tournament_privacy
        self.deltas = {
            (name, is_team): tuple(kind.deltas_for(is_team).get(s, 0) for s in STAT_NAMES)
            for name, kind in EVENT_TYPES.items()
            for is_team in (False, True)
        }
        mark = "?" if backend == "sqlite" else "%s"
        row = "(" + ", ".join([mark] * len(EVENT_COLUMNS)) + ")"
        self.insert_event = (
            f"INSERT INTO activity_events ({', '.join(EVENT_COLUMNS)}) VALUES {row} "
            "ON CONFLICT (player_id, event_type, source_model, source_id) DO NOTHING"
        )
        stat_row = "(" + ", ".join([mark] * (len(STAT_NAMES) + 3)) + ")"
        upsert_tail = (
            " ON CONFLICT (player_id, scope) DO UPDATE SET "
            + ", ".join(f"{s} = player_stats.{s} + excluded.{s}" for s in STAT_NAMES)
            + ", updated_at = excluded.updated_at"
        )
        stat_head = f"INSERT INTO player_stats (player_id, scope, {', '.join(STAT_NAMES)}, updated_at) VALUES "
        # One statement upserting both scopes (or only ``all`` for a private event).
        self.upsert_one = stat_head + stat_row + upsert_tail
        self.upsert_two = stat_head + stat_row + ", " + stat_row + upsert_tail
        if backend == "sqlite":
            path = url.removeprefix("sqlite:///")
            self.conn = sqlite3.connect(path, isolation_level=None)
            for pragma in ("journal_mode=WAL", "foreign_keys=ON",
                           f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "synchronous=NORMAL"):
                self.conn.execute(f"PRAGMA {pragma}")
        else:
            self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))

    def close(self) -> None:
        self.conn.close()

    def _begin(self):
        if self.backend == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn.cursor()

    def _commit(self) -> None:
        if self.backend == "sqlite":
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()

    def _event_row(self, fact, now: datetime, privacy_from_map: bool = True) -> tuple:
        is_private = fact.is_private or (privacy_from_map and self.privacy.get(fact.tournament_id, False))
        if self.backend == "sqlite":
            return (
                fact.player_id, fact.event_type, sqlite_time(fact.occurred_at), sqlite_time(now),
                fact.source_model, fact.source_id, fact.origin, fact.origin_id, fact.team_id,
                fact.tournament_id, int(is_private), json.dumps(fact.metadata), fact.reverses_event_id,
            )
        return (
            fact.player_id, fact.event_type, fact.occurred_at, now, fact.source_model, fact.source_id,
            fact.origin, fact.origin_id, fact.team_id, fact.tournament_id, is_private,
            Jsonb(fact.metadata), fact.reverses_event_id,
        )

    def _stat_rows(self, totals: dict[tuple[int, str], list[int]], now: datetime) -> list[tuple]:
        stamp = sqlite_time(now) if self.backend == "sqlite" else now
        return [(player_id, scope, *values, stamp) for (player_id, scope), values in sorted(totals.items())]

    def record_one(self, fact) -> int | None:
        """Record one event with the product's statements for a live result; commit."""
        from webapp.domain.recording import YOUNGEST_ARCHIVABLE, _insert_few_sql

        now = datetime.now(UTC)
        # Privacy is the statement's to derive, from the tournament: the fact's own flag goes in.
        row = self._event_row(fact, now, privacy_from_map=False)
        archivable = fact.occurred_at < now - YOUNGEST_ARCHIVABLE
        cursor = self._begin()
        if self.backend == "sqlite":
            cursor.execute(_insert_few_sql("sqlite", 1, archivable, 0), (*row, fact.tournament_id))
            inserted = cursor.fetchone()
            if inserted is not None:
                self._upsert_stats(cursor, fact, row[3], is_private=inserted[5])
        else:
            key = (fact.player_id, fact.event_type, fact.source_model, fact.source_id)
            deltas = self.deltas[(fact.event_type, fact.team_id is not None)]
            cursor.execute(
                _insert_few_sql("postgresql", 1, archivable, 2),
                (*row, fact.tournament_id, *key, "all", *deltas, *key, "public", *deltas, now),
            )
            inserted = cursor.fetchone()
        self._commit()
        return inserted[0] if inserted else None

    def record_one_plain(self, fact) -> int | None:
        """Insert one event and, if new, add its deltas to both scopes; commit."""
        now = datetime.now(UTC)
        row = self._event_row(fact, now)
        cursor = self._begin()
        cursor.execute(self.insert_event + " RETURNING id", row)
        inserted = cursor.fetchone()
        if inserted is not None:
            self._upsert_stats(cursor, fact, row[3], is_private=row[10])
        self._commit()
        return inserted[0] if inserted else None

    def _upsert_stats(self, cursor, fact, stamp, *, is_private: bool) -> None:
        """Add one new event's deltas to its player's stats: both scopes, or ``all`` alone if private."""
        deltas = self.deltas[(fact.event_type, fact.team_id is not None)]
        if is_private:
            cursor.execute(self.upsert_one, (fact.player_id, "all", *deltas, stamp))
        else:
            cursor.execute(
                self.upsert_two,
                (fact.player_id, "all", *deltas, stamp, fact.player_id, "public", *deltas, stamp),
            )

    def _batch_totals(self, facts: Sequence, rows: list[tuple]) -> dict[tuple[int, str], list[int]]:
        totals: dict[tuple[int, str], list[int]] = {}
        width = len(STAT_NAMES)
        for fact, row in zip(facts, rows):
            deltas = self.deltas[(fact.event_type, fact.team_id is not None)]
            for scope in ("all",) if row[10] else ("all", "public"):
                values = totals.get((fact.player_id, scope))
                if values is None:
                    values = totals[(fact.player_id, scope)] = [0] * width
                for i, d in enumerate(deltas):
                    values[i] += d
        return totals

    def record_batch(self, facts: Sequence, copy: bool = False) -> None:
        """Insert a batch of new events (executemany, or COPY) and upsert their stat totals."""
        now = datetime.now(UTC)
        rows = [self._event_row(fact, now) for fact in facts]
        totals = self._batch_totals(facts, rows)
        cursor = self._begin()
        if copy:
            with cursor.copy(f"COPY activity_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as pipe:
                for row in rows:
                    pipe.write_row(row)
        else:
            cursor.executemany(self.insert_event, rows)
        cursor.executemany(self.upsert_one, self._stat_rows(totals, now))
        self._commit()


# Measurements ------------------------------------------------------------------


def _percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def _latency_summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "events": len(ordered),
        "p50_ms": _percentile(ordered, 50) * 1e3,
        "p95_ms": _percentile(ordered, 95) * 1e3,
        "p99_ms": _percentile(ordered, 99) * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "events_per_s": len(ordered) / sum(ordered),
    }


def _alternate(sides: dict[str, Callable[[Any], None]], blocks: dict[str, list]) -> None:
    """Run each side's blocks in turn, so both meet the same table sizes and WAL state."""
    for i in range(max(len(b) for b in blocks.values())):
        for name, run in sides.items():
            if i < len(blocks[name]):
                run(blocks[name][i])


def _split(values: list, size: int) -> list[list]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def measure_single(app, raw: RawRecorder, population: Population, events: int, source_base: int) -> dict:
    """Per-event latency of record_event in its own transaction, product beside raw.

    The facts are live results, minutes old. The raw driver runs the product's
    statements (``raw``), and a plain insert as a reference (``raw_plain``).
    Also times an empty ``unit_of_work``: the fixed cost of the transaction
    boundary alone, which bounds the ratio recording can reach.
    """
    from webapp.domain.recording import RecordStatus, record_event
    from webapp.extensions import db
    from webapp.transaction import unit_of_work

    warmup = 300
    sides = ("product", "raw", "raw_plain", "empty_unit_of_work")
    facts = {
        name: population.facts(source_base + k * 10_000_000, warmup + events, seed=1, live=True)
        for k, name in enumerate(sides)
    }
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, float] = dict.fromkeys(sides, 0.0)
    clock, cpu_clock = time.perf_counter, time.process_time

    with app.app_context():
        session = db.session()

        def product(block: list) -> None:
            started = cpu_clock()
            for fact in block:
                start = clock()
                with unit_of_work(session):
                    outcome = record_event(session, fact)
                latencies["product"].append(clock() - start)
                if outcome.status is not RecordStatus.RECORDED:
                    raise AssertionError(f"expected a new event, got {outcome}")
            cpu["product"] += cpu_clock() - started

        def baseline(name: str, record: Callable[[Any], int | None]) -> Callable[[list], None]:
            def run(block: list) -> None:
                started = cpu_clock()
                for fact in block:
                    start = clock()
                    if record(fact) is None:
                        raise AssertionError(f"{name}: expected a new event for {fact.key}")
                    latencies[name].append(clock() - start)
                cpu[name] += cpu_clock() - started

            return run

        def empty(block: list) -> None:
            started = cpu_clock()
            for _ in block:
                start = clock()
                with unit_of_work(session):
                    pass
                latencies["empty_unit_of_work"].append(clock() - start)
            cpu["empty_unit_of_work"] += cpu_clock() - started

        runners = {
            "product": product, "raw": baseline("raw", raw.record_one),
            "raw_plain": baseline("raw_plain", raw.record_one_plain), "empty_unit_of_work": empty,
        }
        _alternate(runners, {name: [f[:warmup]] for name, f in facts.items()})
        for name in sides:
            latencies[name].clear()
            cpu[name] = 0.0
        _alternate(runners, {name: _split(f[warmup:], 250) for name, f in facts.items()})
        db.session.remove()
    summary = {name: _latency_summary(values) for name, values in latencies.items()}
    for name in sides:
        # CPU time of this process: on SQLite all the work, and steadier than
        # wall time when other processes compete for the cores.
        summary[name]["cpu_us_per_event"] = cpu[name] / events * 1e6
    return summary


def measure_batch(app, raw: RawRecorder, population: Population, events: int, batch_size: int,
                  source_base: int) -> dict:
    """Events per second of record_events per batch, product beside raw executemany (and COPY)."""
    from webapp.domain.recording import record_events
    from webapp.extensions import db
    from webapp.transaction import unit_of_work

    sides = ["product", "raw_executemany"] + (["raw_copy"] if raw.backend == "postgresql" else [])
    facts = {
        name: population.facts(source_base + k * 100_000_000, events + batch_size, seed=2)
        for k, name in enumerate(sides)
    }
    seconds = dict.fromkeys(sides, 0.0)
    cpu = dict.fromkeys(sides, 0.0)
    clock = time.perf_counter

    with app.app_context():
        session = db.session()

        def timed(name: str, record: Callable[[list], None]) -> Callable[[list], None]:
            def run(batch: list) -> None:
                start, started = clock(), time.process_time()
                record(batch)
                seconds[name] += clock() - start
                cpu[name] += time.process_time() - started
            return run

        def product(batch: list) -> None:
            with unit_of_work(session):
                outcome = record_events(session, batch)
            if len(outcome.recorded) != len(batch):
                raise AssertionError("expected every fact of the batch to be new")

        runners = {
            "product": timed("product", product),
            "raw_executemany": timed("raw_executemany", raw.record_batch),
            "raw_copy": timed("raw_copy", lambda batch: raw.record_batch(batch, copy=True)),
        }
        # One warm-up batch each, then the measured ones in turn.
        for name in sides:
            runners[name](facts[name][:batch_size])
        for name in sides:
            seconds[name] = cpu[name] = 0.0
        _alternate({n: runners[n] for n in sides},
                   {n: _split(facts[n][batch_size:], batch_size) for n in sides})
        db.session.remove()
    return {
        name: {"events": events, "seconds": s, "events_per_s": events / s,
               "cpu_us_per_event": cpu[name] / events * 1e6}
        for name, s in seconds.items()
    }


def seed_history(app, population: Population, events: int) -> None:
    """Insert ``events`` consistent events and their stats set-wise, then add a little drift.

    Every player gets every event type; one event in ten is in a private
    tournament and three in ten are a team's.
    """
    from webapp.domain.projection import expected_stats_sql
    from webapp.extensions import db
    from webapp.models import Team

    teams = 500
    players, tournaments = len(population.player_ids), len(population.tournament_ids)
    first_player, first_tournament = population.player_ids[0], population.tournament_ids[0]
    types = ("match_won", "match_lost", "match_won", "match_lost", "match_forfeit_won",
             "match_forfeit_lost", "tournament_checked_in", "tournament_completed")
    # Each player gets every type, in private and public tournaments alike.
    type_case = "CASE (n / 3) % 8 " + " ".join(f"WHEN {i} THEN '{t}'" for i, t in enumerate(types)) + " END"
    metadata = '{"round": "R1", "side": "a", "opponent_player_ids": [1]}'
    with app.app_context():
        engine = db.engine
        postgres = engine.dialect.name == "postgresql"
        with engine.begin() as conn:
            conn.execute(sa.insert(Team.__table__), [{"name": f"Bench Team {n}", "created_at": T0}
                                                      for n in range(teams)])
            first_team = conn.scalar(sa.select(sa.func.min(Team.id)))
        # Three events in ten are a team's.
        team = f"CASE WHEN n % 10 < 3 THEN {first_team} + n % {teams} END"
        step = 1_000_000
        for start in range(0, events, step):
            stop = min(events, start + step)
            if postgres:
                source = f"FROM generate_series({start}::bigint, {stop - 1}) AS s(n)"
                head, occurred = "", "TIMESTAMPTZ '2024-01-01 00:00:00+00' + n * INTERVAL '1 second'"
                meta, private = f"'{metadata}'::jsonb", f"(((n / 5) % {tournaments}) % 10 = 0)"
            else:
                head = (f"WITH RECURSIVE seq(n) AS (SELECT {start} UNION ALL "
                        f"SELECT n + 1 FROM seq WHERE n + 1 < {stop}) ")
                source = "FROM seq"
                occurred = "strftime('%Y-%m-%d %H:%M:%f000', '2024-01-01', '+' || n || ' seconds')"
                meta, private = f"'{metadata}'", f"(((n / 5) % {tournaments}) % 10 = 0)"
            sql = (
                head + f"INSERT INTO activity_events ({', '.join(EVENT_COLUMNS)}) "
                f"SELECT {first_player} + (n * 7919) % {players}, {type_case}, {occurred}, {occurred}, "
                f"'match', n, 'backfill', NULL, {team}, {first_tournament} + (n / 5) % {tournaments}, "
                f"{private}, {meta}, NULL {source}"
            )
            with engine.begin() as conn:
                conn.exec_driver_sql(_escape_percent(sql) if postgres else sql)
        with engine.begin() as conn:
            now = "now()" if postgres else "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
            conn.execute(
                sa.text(
                    expected_stats_sql()
                    + f"INSERT INTO player_stats (player_id, scope, {', '.join(STAT_NAMES)}, updated_at) "
                    f"SELECT player_id, scope, {', '.join(STAT_NAMES)}, {now} FROM expected"
                ),
                {"player_id": None},
            )
            conn.execute(
                sa.text("UPDATE player_stats SET matches_won = matches_won + 1 "
                        "WHERE player_id % 500 = 0 AND scope = 'all'")
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE" if postgres else "ANALYZE")
        db.session.remove()


def _escape_percent(sql: str) -> str:
    # psycopg reads a lone % as a placeholder even when no parameters are passed.
    return sql.replace("%", "%%")


def measure_reconcile(app, url: str, backend: str, repeats: int = 3) -> dict:
    """Seconds for find_drift over the whole table beside the same SQL through the raw driver.

    The raw driver also runs the drift SQL with the portable counting (the one
    PostgreSQL uses, and SQLite did before it counted its own way) as a reference.
    """
    from webapp.domain.reconciliation import drift_sql, find_drift
    from webapp.extensions import db

    clock = time.perf_counter
    product_times, raw_times, product_cpu, raw_cpu, portable_cpu = [], [], [], [], []
    drifts = None
    with app.app_context():
        session = db.session()
        for _ in range(repeats):
            start, started = clock(), time.process_time()
            report = find_drift(session)
            session.rollback()
            product_times.append(clock() - start)
            product_cpu.append(time.process_time() - started)
            drifts = len(report.drifts)
        db.session.remove()

    product_sql = drift_sql(backend)
    portable_sql = drift_sql(None)

    count_sql = "SELECT COUNT(*) FROM players"
    if backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)

        def run(sql: str) -> list:
            conn.execute("BEGIN")
            conn.execute(count_sql).fetchone()
            rows = conn.execute(sql, {"player_id": None}).fetchall()
            conn.execute("ROLLBACK")
            return rows
    else:
        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ

        def run(sql: str) -> list:
            conn.execute(count_sql).fetchone()
            rows = conn.execute(sql.replace(":player_id", "%(player_id)s"), {"player_id": None}).fetchall()
            conn.rollback()
            return rows

    portable_times = []
    for _ in range(repeats):
        start, started = clock(), time.process_time()
        rows = run(product_sql)
        raw_times.append(clock() - start)
        raw_cpu.append(time.process_time() - started)
        start, started = clock(), time.process_time()
        portable_rows = run(portable_sql)
        portable_times.append(clock() - start)
        portable_cpu.append(time.process_time() - started)
    conn.close()
    return {
        # On SQLite the query runs in this process, so its CPU time is the query's.
        "product": {"seconds": statistics.median(product_times), "runs": product_times,
                    "cpu_seconds": statistics.median(product_cpu), "drifts": drifts},
        "raw": {"seconds": statistics.median(raw_times), "runs": raw_times,
                "cpu_seconds": statistics.median(raw_cpu), "drifted_rows": len(rows)},
        "raw_portable_counting": {"seconds": statistics.median(portable_times), "runs": portable_times,
                                  "cpu_seconds": statistics.median(portable_cpu),
                                  "drifted_rows": len(portable_rows)},
    }


def measure_memory(url: str, events: int, batch_size: int, source_base: int) -> dict:
    """Peak RSS of a child process ingesting ``events`` through record_events in batches."""
    command = [sys.executable, __file__, "--memory-child", url, "--memory-events", str(events),
               "--batch-size", str(batch_size), "--source-base", str(source_base)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory_child(url: str, events: int, batch_size: int, source_base: int) -> None:
    """Ingest ``events`` facts in batches, as a backfill would; print peak RSS as JSON."""
    from webapp.domain.recording import record_events
    from webapp.extensions import db
    from webapp.models import Player, Tournament
    from webapp.transaction import unit_of_work

    app = build_app(url)
    with app.app_context():
        session = db.session()
        player_ids = list(session.scalars(sa.select(Player.id)))
        privacy = dict(session.execute(sa.select(Tournament.id, Tournament.is_private)).all())
        session.rollback()
        population = Population(player_ids, privacy)
        gc.collect()
        before = peak_rss_mb()
        start = time.perf_counter()
        for offset in range(0, events, batch_size):
            batch = population.facts(source_base + offset, min(batch_size, events - offset), seed=offset)
            with unit_of_work(session):
                record_events(session, batch)
        seconds = time.perf_counter() - start
        db.session.remove()
    peak = peak_rss_mb()
    print(json.dumps({"events": events, "batch_size": batch_size, "rss_before_mb": before,
                      "peak_rss_mb": peak, "seconds": seconds, "events_per_s": events / seconds}))


# Running and reporting -----------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> dict:
    phases = set(args.phases.split(","))
    figures: dict[str, Any] = {"backend": backend, "load_before": os.getloadavg()}
    with scratch_database(backend) as url:
        app = build_app(url)
        population = migrate_and_seed(app, args.players, args.tournaments)
        figures["server"] = server_version(app)
        raw = RawRecorder(backend, url, population.tournament_privacy)
        try:
            if "single" in phases:
                say(f"{backend}: single events ({args.events} per side)")
                figures["single"] = measure_single(app, raw, population, args.events, 1_000_000_000)
            if "batch" in phases:
                say(f"{backend}: batches ({args.batch_events} events per side, {args.batch_size} per batch)")
                figures["batch"] = measure_batch(app, raw, population, args.batch_events, args.batch_size,
                                                 2_000_000_000)
        finally:
            raw.close()
        if "memory" in phases:
            say(f"{backend}: peak memory of a {args.memory_events}-event ingest")
            figures["memory"] = measure_memory(url, args.memory_events, args.batch_size, 3_000_000_000)
        release(app)
    if "reconcile" in phases:
        with scratch_database(backend) as url:
            app = build_app(url)
            population = migrate_and_seed(app, args.players, args.tournaments)
            say(f"{backend}: seeding {args.reconcile_events} events for reconciliation")
            seed_history(app, population, args.reconcile_events)
            say(f"{backend}: reconciliation")
            figures["reconcile"] = measure_reconcile(app, url, backend)
            figures["reconcile"]["events"] = args.reconcile_events
            release(app)
    figures["load_after"] = os.getloadavg()
    return figures


def _ok(passed: bool) -> str:
    return "yes" if passed else "**no**"


def format_table(figures: dict) -> str:
    """Render one backend's figures as a Markdown table."""
    load = "/".join(f"{x:.1f}" for x in figures["load_before"])
    lines = [
        f"### {figures['backend']} ({figures.get('server', '')}; load average at start {load})",
        "",
        "| measure | product | raw driver | product/raw | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    single = figures.get("single")
    if single:
        p, r = single["product"], single["raw"]
        for name in ("p50", "p95"):
            lines.append(f"| single event {name} (ms) | {p[name + '_ms']:.2f} | {r[name + '_ms']:.2f} | "
                         f"{p[name + '_ms'] / r[name + '_ms']:.2f}x | | |")
        lines.append(f"| single event p99 (ms) | {p['p99_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{p['p99_ms'] / r['p99_ms']:.2f}x | < {SINGLE_P99_MS:g} ms | {_ok(p['p99_ms'] < SINGLE_P99_MS)} |")
        ratio = p["events_per_s"] / r["events_per_s"]
        lines.append(f"| single events/s | {p['events_per_s']:,.0f} | {r['events_per_s']:,.0f} | "
                     f"{ratio:.0%} | >= {SINGLE_RATIO:.0%} of raw | {_ok(ratio >= SINGLE_RATIO)} |")
        lines.append(f"| single event, CPU of this process (µs) | {p['cpu_us_per_event']:.0f} | "
                     f"{r['cpu_us_per_event']:.0f} | {r['cpu_us_per_event'] / p['cpu_us_per_event']:.0%} | | |")
        if "raw_plain" in single:
            plain = single["raw_plain"]
            lines.append(f"| single events/s, raw plain insert | {p['events_per_s']:,.0f} | "
                         f"{plain['events_per_s']:,.0f} | {p['events_per_s'] / plain['events_per_s']:.0%} | "
                         f"(reference) | |")
        if "empty_unit_of_work" in single:
            e = single["empty_unit_of_work"]
            lines.append(f"| empty unit_of_work alone: p50 ms / CPU µs | {e['p50_ms']:.2f} / "
                         f"{e['cpu_us_per_event']:.0f} | | | (floor) | |")
    batch = figures.get("batch")
    if batch:
        p = batch["product"]["events_per_s"]
        r = batch["raw_executemany"]["events_per_s"]
        lines.append(f"| batch events/s, raw executemany | {p:,.0f} | {r:,.0f} | {p / r:.0%} | "
                     f">= {BATCH_RATIO:.0%} of raw | {_ok(p / r >= BATCH_RATIO)} |")
        if "raw_copy" in batch:
            c = batch["raw_copy"]["events_per_s"]
            lines.append(f"| batch events/s, raw COPY | {p:,.0f} | {c:,.0f} | {p / c:.0%} | (reference) | |")
    reconcile = figures.get("reconcile")
    if reconcile:
        n = reconcile["events"]
        p, r = reconcile["product"]["seconds"], reconcile["raw"]["seconds"]
        # The target is for 6M events; smaller runs are held to the same rate.
        limit = RECONCILE_SECONDS_PER_6M * n / 6_000_000
        lines.append(f"| reconcile {n:,} events (s) | {p:.2f} | {r:.2f} | {p / r:.2f}x | "
                     f"< {limit:.2f} s (5 s per 6M) | {_ok(p < limit)} |")
        if "raw_portable_counting" in reconcile:
            d = reconcile["raw_portable_counting"]["seconds"]
            lines.append(f"| reconcile, the portable drift SQL through the raw driver (s) | | {d:.2f} | | "
                         "(reference) | |")
        if figures["backend"] == "sqlite" and "cpu_seconds" in reconcile["product"]:
            cpu = [reconcile[k]["cpu_seconds"] for k in ("product", "raw", "raw_portable_counting")]
            lines.append(f"| reconcile, CPU of this process (s): find_drift / raw / raw with portable "
                         f"counting | {cpu[0]:.2f} | {cpu[1]:.2f} / {cpu[2]:.2f} | | | |")
    memory = figures.get("memory")
    if memory:
        lines.append(f"| peak RSS, {memory['events']:,}-event ingest (MB) | {memory['peak_rss_mb']:.0f} | | | "
                     f"< {INGEST_PEAK_MB} MB | {_ok(memory['peak_rss_mb'] < INGEST_PEAK_MB)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--events", type=int, default=5_000, help="single events recorded per side")
    parser.add_argument("--batch-events", type=int, default=200_000, help="events recorded in batches per side")
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--reconcile-events", type=int, default=1_000_000,
                        help="events in the reconciled table (6000000 for the full target)")
    parser.add_argument("--memory-events", type=int, default=1_000_000, help="events in the memory run")
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument("--tournaments", type=int, default=200)
    parser.add_argument("--phases", default="single,batch,reconcile,memory",
                        help="comma-separated subset of single,batch,reconcile,memory")
    parser.add_argument("--no-save", action="store_true", help="do not write JSON to benchmarks/results/")
    parser.add_argument("--memory-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--source-base", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_terminate)

    if args.memory_child:
        memory_child(args.memory_child, args.memory_events, args.batch_size, args.source_base)
        return 0

    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "options": {k: v for k, v in vars(args).items() if k not in ("memory_child", "source_base")},
        "backends": {},
    }
    for backend in backends:
        results["backends"][backend] = run_backend(backend, args)
        print(format_table(results["backends"][backend]) + "\n", flush=True)
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"core-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        say(f"figures written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
