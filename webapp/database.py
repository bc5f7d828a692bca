"""Engine behaviour both databases need: SQLite pragmas and explicit transactions.

SQLite runs in WAL mode with foreign keys on and a busy timeout. Python's
sqlite3 module begins transactions on its own schedule, so it is switched to
autocommit and SQLAlchemy emits BEGIN itself: a plain ``BEGIN`` for reads, and
``BEGIN IMMEDIATE`` for units of work that write, so that two writers queue on
the busy timeout instead of failing to upgrade a read lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "activity_ops_write"


@event.listens_for(Engine, "connect")
def _configure_sqlite_connection(dbapi_connection, _record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL with synchronous=NORMAL is durable against application crashes and
    # consistent after power loss; FULL would fsync on every commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


#: A pooled server connection unused for longer than this is pinged before it is
#: handed out: long enough that a busy process never pings, short enough to
#: catch a server restart or a firewall dropping idle connections.
PING_AFTER_IDLE_SECONDS = 10.0
_CHECKED_IN_AT = "activity_ops_checked_in_at"


@event.listens_for(Pool, "checkin")
def _note_when_idle_began(dbapi_connection, record) -> None:
    if dbapi_connection is not None:
        record.info[_CHECKED_IN_AT] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_after_idle(dbapi_connection, record, _proxy) -> None:
    """Replace a server connection that died while idle before anyone uses it.

    pool_pre_ping would cost a round trip in every transaction, which on a busy
    process is most of what recording one event costs beyond its own statements.
    A connection that died while in use, or within the idle window, fails its
    first statement instead (DatabaseUnavailable for that unit of work) and is
    discarded.
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        return  # a database file has no server connection to lose
    idle_since = record.info.get(_CHECKED_IN_AT)
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        # The driver began a transaction for the ping: end it, or whoever checks the
        # connection out could not set its isolation level (a snapshot read does).
        dbapi_connection.rollback()
    except Exception as error:
        # The pool discards this connection and checks out (or opens) another.
        raise exc.DisconnectionError(f"a pooled connection idle since {idle_since:.0f} died: {error}") from error


@event.listens_for(Engine, "begin")
def _begin_sqlite_transaction(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    statement = "BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION) else "BEGIN"
    if _watched(connection):
        run_on_driver(connection, statement)  # so that statement counters and tracing see it
        return
    try:
        connection.connection.driver_connection.execute(statement)
    except sqlite3.Error as error:
        # As run_on_driver raises it: a lock not granted in time becomes DatabaseUnavailable.
        raise exc.DBAPIError.instance(statement, (), error, sqlite3.Error, dialect=connection.dialect) from error


def run_on_driver(
    connection: Connection, sql: str, parameters: Sequence[Any] | dict[str, Any] = (), *, many: bool = False
) -> list[tuple]:
    """Run driver-level ``sql`` on the connection's DB-API cursor; return its rows as tuples.

    For the few statements every recorded event runs: SQLAlchemy's statement
    execution (execution context, result metadata, event dispatch) costs more
    than the statements themselves, and on SQLite as much again as the raw
    driver's whole transaction. Errors are raised as SQLAlchemy's exceptions,
    as ``exec_driver_sql`` would raise them, so transaction handling above is
    unchanged. When anything listens for cursor executions (statement
    counters, tracing), the statement goes through ``exec_driver_sql`` so that
    the listeners see it. SQLAlchemy's echo logging does not see these
    statements; a ``before_cursor_execute`` listener that logs does.
    """
    if _watched(connection):
        if many:
            connection.exec_driver_sql(sql, list(parameters))
            return []
        result = connection.exec_driver_sql(sql, parameters)
        return [tuple(row) for row in result] if result.returns_rows else []
    dbapi_connection = connection.connection
    cursor = dbapi_connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return cursor.fetchall() if cursor.description is not None else []
    except connection.dialect.loaded_dbapi.Error as error:
        if connection.dialect.is_disconnect(error, dbapi_connection.dbapi_connection, cursor):
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            sql, parameters, error, connection.dialect.loaded_dbapi.Error,
            dialect=connection.dialect, ismulti=many,
        ) from error
    finally:
        cursor.close()


def _watched(connection: Connection) -> bool:
    """Whether anything listens for cursor executions on the connection's engine (statement counters, tracing).

    Asked of the engine: a connection's own event dispatch is built afresh for
    every connection, so asking it first cost a tenth of an empty unit of work.
    Listeners are added to engines (or the Engine class), never to one connection.
    """
    dispatch = connection.engine.dispatch
    return bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute)


def begin_write(session: Session) -> None:
    """Start a new transaction on the session as a writer.

    An open transaction is a reader's (writes happen only inside units of
    work), so it is ended first rather than written from. Its view may be older
    than rows committed since: on PostgreSQL a drift check leaves a REPEATABLE
    READ snapshot open, and writing from it fails with a serialization error as
    soon as another writer recorded the same fact; on SQLite a reader cannot
    always become a writer at all.
    """
    if session.in_transaction():
        session.rollback()
    session.connection(execution_options={WRITE_OPTION: True})


def begin_snapshot(session: Session) -> None:
    """Start a transaction whose reads all see one consistent snapshot.

    PostgreSQL needs REPEATABLE READ for that; SQLite in WAL mode gives every
    read transaction a snapshot from its first read.
    """
    if session.in_transaction():
        session.rollback()
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.connection()


def dialect_insert(session_or_connection, table):
    """Return an INSERT for ``table`` that supports ON CONFLICT on our dialect."""
    name = session_or_connection.get_bind().dialect.name if isinstance(
        session_or_connection, Session
    ) else session_or_connection.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported databases reach here
        raise RuntimeError(f"unsupported database dialect {name!r}")
    return insert(table)
