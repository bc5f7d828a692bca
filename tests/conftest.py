"""Fixtures shared by the whole suite.

Every test that touches the database runs twice: on a SQLite file and on
PostgreSQL. Each run of the suite migrates a fresh database per backend (and
per xdist worker) with the real migrations, and every test leaves the tables
empty for the next one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

from webapp import create_app
from webapp.config import TestConfig
from webapp.domain.audit import Actor
from webapp.domain.disputes import report_dispute
from webapp.domain.results import record_match_result
from webapp.extensions import db, limiter
from webapp.models import (
    Base,
    Match,
    Player,
    Registration,
    Team,
    TeamMembership,
    Tournament,
    TournamentResult,
)
from webapp.models.players import format_public_id
from webapp.transaction import unit_of_work

POSTGRES_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
POSTGRES_ADMIN_URL = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]

T0 = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection((POSTGRES_HOST, POSTGRES_PORT), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip (on a laptop) or fail (in CI) when PostgreSQL is not there."""
    if _postgres_reachable():
        return
    message = f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}, and CI=true requires the PostgreSQL tests to run")
    pytest.skip(f"{message}; start it to run the PostgreSQL half of the suite")


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> None:
    """Skip (on a laptop) or fail (in CI) when Redis, production's queue and counter store, is not there."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return
    except redis.RedisError:
        pass
    message = f"Redis is not reachable at {REDIS_URL}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}, and CI=true requires the Redis tests to run")
    pytest.skip(f"{message}; start it to run the tests of the production queue")


def _create_postgres_database(name: str) -> str:
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


def _drop_postgres_database(name: str) -> None:
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def fresh_database_url(tmp_path_factory, worker_id) -> Iterator:
    """A factory of empty databases for a backend, dropped at the end of the run."""
    created: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("db") / f"activity-ops-{uuid.uuid4().hex[:8]}.sqlite3"
            return f"sqlite:///{path}"
        require_postgres()
        name = f"activity_ops_test_{worker_id}_{uuid.uuid4().hex[:8]}"
        created.append(name)
        return _create_postgres_database(name)

    yield make
    for name in created:
        _drop_postgres_database(name)


@pytest.fixture(scope="session")
def worker_id(request) -> str:
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


def _remove_files(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def make_app(database_url: str, **overrides) -> Flask:
    """Build a test app on ``database_url``, with a job queue file of its own."""
    import tempfile

    queue_file = os.path.join(tempfile.gettempdir(), f"activity-ops-queue-{uuid.uuid4().hex[:12]}.sqlite3")
    atexit.register(_remove_files, queue_file, f"{queue_file}-wal", f"{queue_file}-shm")
    return create_app(
        TestConfig(),
        overrides={"SQLALCHEMY_DATABASE_URI": database_url, "QUEUE_URL": f"sqlite:///{queue_file}", **overrides},
    )


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def migrated_app(backend, fresh_database_url) -> Iterator[Flask]:
    """One app per backend on a database built by the real migrations."""
    app = make_app(fresh_database_url(backend))
    with app.app_context():
        upgrade()
        db.session.remove()
    yield app
    with app.app_context():
        db.engine.dispose()


def _empty_all_tables(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
        with db.engine.begin() as conn:
            # The audit trail refuses deletion through triggers; between tests they
            # are bypassed (PostgreSQL) or dropped and restored as they were (SQLite).
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            else:
                triggers = conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                ).all()
                for name, _sql in triggers:
                    conn.exec_driver_sql(f"DROP TRIGGER {name}")
                for table in tables:
                    conn.exec_driver_sql(f"DELETE FROM {table}")
                # Ids start again from 1, as RESTART IDENTITY makes them on PostgreSQL.
                conn.exec_driver_sql("DELETE FROM sqlite_sequence")
                for _name, sql in triggers:
                    conn.exec_driver_sql(sql)


@pytest.fixture
def app(migrated_app) -> Iterator[Flask]:
    """The backend's app with an app context pushed; every table is empty afterwards."""
    with migrated_app.app_context():
        yield migrated_app
        db.session.remove()
    _empty_all_tables(migrated_app)
    # Run ids start again from 1: a task left in the queue would run another test's run.
    migrated_app.extensions["huey"].flush()


@pytest.fixture
def session(app):
    """The app's SQLAlchemy session."""
    return db.session()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class RequestPerContextClient(FlaskClient):
    """Serve each request in an app context of its own, as a real server does.

    The test itself holds an app context for its session; without this, requests
    would share the test's ``g`` and session and see state no real request sees.
    """

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)


@pytest.fixture
def client(app):
    """A browser-like client; CSRF is on, so forms must carry their token (see ``sign_in``)."""
    limiter.reset()  # rate limits are per test
    app.test_client_class = RequestPerContextClient
    return app.test_client()


STAFF_PASSWORD = "correct horse battery staple"


@pytest.fixture
def make_staff(session):
    """Create a staff account with the given roles (password STAFF_PASSWORD)."""
    from webapp.domain.audit import SYSTEM
    from webapp.domain.staff import create_staff
    from webapp.transaction import unit_of_work

    def make(*roles: str, email: str | None = None):
        email = email or f"{'-'.join(roles) or 'nobody'}-{uuid.uuid4().hex[:6]}@staff.test"
        with unit_of_work(session):
            created = create_staff(session, SYSTEM, email, list(roles), STAFF_PASSWORD)
        return created.staff

    return make


def csrf_token_from(html: str) -> str:
    """Return the CSRF token embedded in a page."""
    import re

    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    ) or re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page carries no CSRF token"
    return match.group(1)


@pytest.fixture
def sign_in(client, make_staff):
    """Sign in through the real form as a new staff member with ``roles``; return them."""

    def do(*roles: str):
        staff = make_staff(*roles)
        page = client.get("/auth/sign-in")
        response = client.post(
            "/auth/sign-in",
            data={"email": staff.email, "password": STAFF_PASSWORD, "csrf_token": csrf_token_from(page.text)},
        )
        assert response.status_code == 302, response.text
        return staff

    return do


@pytest.fixture
def count_queries(app):
    """Count the SQL statements run inside a ``with count_queries() as counter:`` block.

    ``counter["statements"]`` holds each one's SQL and parameters, for ``query_plan``.
    """
    from contextlib import contextmanager

    @contextmanager
    def counting():
        counter = {"n": 0, "statements": []}

        def on_execute(_conn, _cursor, statement, parameters, _context, _many):
            counter["n"] += 1
            counter["statements"].append((statement, parameters))

        sa.event.listen(db.engine, "before_cursor_execute", on_execute)
        try:
            yield counter
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", on_execute)

    return counting


def query_plan(connection, statement: str, parameters) -> list[str]:
    """Return the lines of the database's plan for ``statement``.

    On PostgreSQL sequential scans are turned off for it: a test's tables are
    so small that scanning them is cheapest, which says nothing about whether
    an index could serve the statement. The caller rolls the connection back.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
    return [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]


# Factories: build platform records the way the platform would have them.


@pytest.fixture
def make_player(session):
    counter = iter(range(1, 1_000_000))

    def make(username: str | None = None, **fields) -> Player:
        n = next(counter)
        username = username or f"player{n}"
        player = Player(
            public_id=fields.pop("public_id", format_public_id(2025, n)),
            username=username,
            display_name=fields.pop("display_name", username.title()),
            email=fields.pop("email", f"{username}@example.test"),
            **fields,
        )
        return _save(session, player)

    return make


@pytest.fixture
def make_team(session):
    def make(name: str, members: list[Player], joined_at: datetime = T0 - timedelta(days=365),
             left_at: datetime | None = None) -> Team:
        member_ids = [member.id for member in members]
        team = Team(name=name)
        with unit_of_work(session):
            session.add(team)
            session.flush()
            session.add_all(
                TeamMembership(team_id=team.id, player_id=player_id, joined_at=joined_at, left_at=left_at)
                for player_id in member_ids
            )
        return team

    return make


@pytest.fixture
def make_tournament(session):
    def make(name: str = "Spring Cup", **fields) -> Tournament:
        tournament = Tournament(
            name=name,
            starts_at=fields.pop("starts_at", T0),
            ends_at=fields.pop("ends_at", T0 + timedelta(days=2)),
            **fields,
        )
        return _save(session, tournament)

    return make


@pytest.fixture
def make_match(session):
    def make(tournament: Tournament, a: Player | Team, b: Player | Team, *, winner: str | None = "a",
             state: str = "completed", round: str = "R1", at: datetime = T0 + timedelta(hours=1),
             is_final: bool = False) -> Match:
        match = Match(
            tournament_id=tournament.id,
            round=round,
            state=state,
            winner_side=winner if state in ("completed", "forfeit") else None,
            scheduled_at=at,
            completed_at=at if state in ("completed", "forfeit") else None,
            is_final=is_final,
            **_side("a", a),
            **_side("b", b),
        )
        return _save(session, match)

    return make


def _save(session, record):
    """Store a record as production code writes: in a unit of work (BEGIN IMMEDIATE on SQLite).

    A plain commit would upgrade the test's read transaction to a writer, which
    SQLite refuses outright when a job thread has written since the read.
    """
    with unit_of_work(session):
        session.add(record)
    return record


def _side(side: str, entrant: Player | Team) -> dict:
    if isinstance(entrant, Team):
        return {f"side_{side}_team_id": entrant.id}
    return {f"side_{side}_player_id": entrant.id}


@pytest.fixture
def make_registration(session):
    def make(tournament: Tournament, entrant: Player | Team, status: str = "checked_in",
             registered_at: datetime = T0 - timedelta(days=3)) -> Registration:
        registration = Registration(
            tournament_id=tournament.id,
            status=status,
            registered_at=registered_at,
            player_id=entrant.id if isinstance(entrant, Player) else None,
            team_id=entrant.id if isinstance(entrant, Team) else None,
        )
        return _save(session, registration)

    return make


@pytest.fixture
def make_result(session):
    def make(tournament: Tournament, winner: Player | Team,
             decided_at: datetime = T0 + timedelta(days=2)) -> TournamentResult:
        result = TournamentResult(
            tournament_id=tournament.id,
            decided_at=decided_at,
            winner_player_id=winner.id if isinstance(winner, Player) else None,
            winner_team_id=winner.id if isinstance(winner, Team) else None,
        )
        return _save(session, result)

    return make


@pytest.fixture
def make_disputed_match(session, make_player, make_tournament, make_match):
    """Return a factory: alice beat bob, the result is recorded, then bob reports the match.

    The factory returns ``(match, dispute, alice, bob)``; the report is bob's
    unless ``reporter`` names someone else.
    """
    def make(reason: str, *, reporter: str | None = None):
        alice, bob = make_player("alice"), make_player("bob")
        match = make_match(make_tournament("Autumn Cup"), alice, bob, winner="a")
        with unit_of_work(session):
            record_match_result(session, match.id)
        with unit_of_work(session):
            dispute = report_dispute(session, Actor(None), match.id, reason,
                                     reporter=reporter or bob.public_id).dispute
        return match, dispute, alice, bob

    return make


@pytest.fixture
def storage_in_tmp_path(app, tmp_path, monkeypatch):
    """Archive files and GDPR exports written under the test's own folder."""
    monkeypatch.setitem(app.config, "ARCHIVE_URL", str(tmp_path / "cold"))
    monkeypatch.setitem(app.config, "GDPR_EXPORT_URL", str(tmp_path / "exports"))
