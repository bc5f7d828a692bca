"""Statements run straight on the driver behave, to their callers, as SQLAlchemy's own."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from webapp import database
from webapp.database import run_on_driver
from webapp.extensions import db


def _mark(connection) -> str:
    return "?" if connection.dialect.name == "sqlite" else "%s"


def test_a_driver_statement_returns_its_rows_as_tuples(session, make_player):
    alice = make_player("alice")
    connection = session.connection()
    rows = run_on_driver(
        connection, f"SELECT id, username FROM players WHERE id = {_mark(connection)}", (alice.id,)
    )
    assert rows == [(alice.id, "alice")]
    assert run_on_driver(connection, f"UPDATE players SET display_name = 'A' WHERE id = {_mark(connection)}",
                         (alice.id,)) == []


def test_a_driver_statement_that_breaks_a_constraint_raises_sqlalchemys_integrity_error(session, make_player):
    alice_id = make_player("alice").id
    connection = session.connection()
    columns = "id, public_id, username, display_name, email, feed_visibility, is_tombstone, created_at"
    copy = f"INSERT INTO players ({columns}) SELECT {columns} FROM players WHERE id = {_mark(connection)}"
    with pytest.raises(sa.exc.IntegrityError) as raised:
        run_on_driver(connection, copy, (alice_id,))
    assert raised.value.statement == copy
    assert raised.value.params == (alice_id,)
    session.rollback()


def test_a_driver_statement_the_database_rejects_raises_sqlalchemys_error(session):
    with pytest.raises(sa.exc.DBAPIError, match="no_such_table"):
        run_on_driver(session.connection(), "SELECT * FROM no_such_table")
    session.rollback()


def test_listeners_of_cursor_executions_see_driver_statements(session, make_player):
    alice_id = make_player("alice").id
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    connection = session.connection()
    sql = f"SELECT username FROM players WHERE id = {_mark(connection)}"
    sa.event.listen(db.engine, "before_cursor_execute", note)
    try:
        rows = run_on_driver(connection, sql, (alice_id,))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", note)
    assert rows == [("alice",)]
    assert seen == [sql]


def test_a_driver_executemany_writes_every_row(session, make_player):
    alice, bob = make_player("alice"), make_player("bob")
    connection = session.connection()
    run_on_driver(
        connection,
        f"UPDATE players SET display_name = {_mark(connection)} WHERE id = {_mark(connection)}",
        [("Alice A", alice.id), ("Bob B", bob.id)],
        many=True,
    )
    names = dict(connection.execute(sa.text("SELECT username, display_name FROM players")).all())
    assert names == {"alice": "Alice A", "bob": "Bob B"}
    session.rollback()


@pytest.fixture
def pool_with_a_dead_connection(app, backend):
    """A pool of one server connection whose server process was killed while it sat idle.

    Yields the engine and the killed process id.
    """
    if backend == "sqlite":
        pytest.skip("a SQLite database is a file: there is no server connection to lose")
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)  # every checkout gets the same one back
    killer = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with killer.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        yield engine, pid
    finally:
        killer.dispose()
        engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def test_a_server_connection_that_died_while_idle_is_replaced_before_anyone_uses_it(
    pool_with_a_dead_connection, monkeypatch
):
    engine, dead = pool_with_a_dead_connection
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert _backend_pid(engine) != dead


def test_a_connection_used_moments_ago_is_not_pinged_and_a_dead_one_fails_once(pool_with_a_dead_connection):
    engine, dead = pool_with_a_dead_connection
    with pytest.raises(sa.exc.OperationalError), engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
    assert _backend_pid(engine) != dead



def test_a_connection_pinged_after_sitting_idle_still_takes_an_isolation_level(app, backend, monkeypatch):
    """The ping must leave no transaction open: a snapshot read sets its isolation level first."""
    if backend == "sqlite":
        pytest.skip("a SQLite database is a file: there is no server connection to ping")
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], pool_size=1, max_overflow=0)
    try:
        _backend_pid(engine)  # in the pool and idle from now on
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            assert connection.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
    finally:
        engine.dispose()

def test_postgresql_sessions_run_in_utc_and_return_utc_times(session, backend):
    if backend == "sqlite":
        pytest.skip("SQLite has no session time zone: times are stored as UTC text")
    connection = session.connection()
    assert connection.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
    now = connection.exec_driver_sql("SELECT TIMESTAMPTZ '2026-03-02 18:00:00+02'").scalar()
    assert now.utcoffset().total_seconds() == 0 and now.hour == 16
