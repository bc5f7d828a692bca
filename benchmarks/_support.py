"""What the benchmarks share: scratch databases, summaries of samples, and how a run reports.

Imported by the ``bench_*.py`` scripts once they have put the repository root on
``sys.path``; not a benchmark itself.
"""

from __future__ import annotations

import resource
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from webapp import create_app
from webapp.config import TestConfig
from webapp.extensions import db

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def sqlite_time(value: datetime) -> str:
    """Return ``value`` as SQLite stores our times: naive UTC text, the bytes the product writes."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def scratch_database(backend: str, sqlite_path: Path, pg_name: str, *, reuse: bool) -> str:
    """Return the URL of a benchmark's scratch database, dropped and created again unless ``reuse``."""
    if backend == "sqlite":
        if not reuse and sqlite_path.exists():
            sqlite_path.unlink()
        return f"sqlite:///{sqlite_path}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg_name,)).fetchone()
        if exists and not reuse:
            admin.execute(f'DROP DATABASE "{pg_name}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{pg_name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_name}"


def release(app: Flask) -> None:
    """Let go of ``app``'s database before it is dropped: flush and stop its latency recorder, close its pool.

    Otherwise the recorder's thread goes on flushing into a database that is gone.
    """
    recorder = app.extensions.get("latency_recorder")
    with app.app_context():
        if recorder is not None:
            recorder.stop()
        db.engine.dispose()


def migrated_app(url: str) -> tuple[Flask, int]:
    """Run the migrations on ``url``; return the app on it and how many events it already holds."""
    app = create_app(TestConfig(), overrides={"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            count = conn.scalar(sa.text("SELECT count(*) FROM activity_events"))
        db.engine.dispose()
    return app, count


def percentiles(samples: list[float]) -> dict[str, float]:
    """Return p50, p95, p99 and the mean of ``samples`` (seconds) in milliseconds."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "mean": statistics.fmean(ordered) * 1000}


def say(message: str) -> None:
    """Report a benchmark's progress on stderr, timestamped; the figures go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def exit_on_terminate(signum, _frame) -> None:
    """Signal handler: unwind normally, so the scratch databases are removed."""
    raise SystemExit(128 + signum)


def server_version(app: Flask) -> str:
    """Name the database server (or SQLite library) ``app`` runs on."""
    with app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            return "SQLite " + sqlite3.sqlite_version
        return conn.exec_driver_sql("SHOW server_version").scalar()


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux carries ``ru_maxrss`` over exec from the parent, so a child started
    by a large parent would report the parent's peak; VmHWM is this process's own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
