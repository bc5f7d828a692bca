"""The schema exists only through migrations, and they agree with the models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import upgrade

from tests.conftest import T0, make_app
from webapp.extensions import db
from webapp.models import Base

FIRST_REVISION = "3d4f492da9cc"


@contextmanager
def app_on_fresh_database(backend, fresh_database_url) -> Iterator[Flask]:
    """An app on an empty database of its own, its connections closed afterwards."""
    app = make_app(fresh_database_url(backend))
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def migrations_config(app: Flask) -> AlembicConfig:
    """The Alembic configuration `flask db` uses (needs an app context)."""
    migrate = app.extensions["migrate"]
    return migrate.migrate.get_config(migrate.directory)


def head_revision(app: Flask) -> str:
    with app.app_context():
        return ScriptDirectory.from_config(migrations_config(app)).get_current_head()


def current_revision(app: Flask) -> str | None:
    with app.app_context(), db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def table_names(app: Flask) -> set[str]:
    with app.app_context():
        return set(sa.inspect(db.engine).get_table_names())


def add_player_with_an_event(app: Flask) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO players (id, public_id, username, display_name, email, "
                "feed_visibility, created_at) VALUES (1, 'DC-25-000001', 'alice', 'Alice', "
                "'alice@example.test', 'private', :now)"
            ),
            {"now": T0},
        )
        conn.execute(
            sa.text(
                "INSERT INTO activity_events (player_id, event_type, occurred_at, recorded_at, "
                "source_model, source_id, origin, is_private, metadata) VALUES "
                "(1, 'tournament_registered', :now, :now, 'registration', 1, 'live', false, '{}')"
            ),
            {"now": T0},
        )


def event_count(app: Flask) -> int:
    with app.app_context(), db.engine.connect() as conn:
        return conn.scalar(sa.text("SELECT COUNT(*) FROM activity_events"))


def test_migrations_build_exactly_the_models(backend, fresh_database_url):
    with app_on_fresh_database(backend, fresh_database_url) as app:
        with app.app_context():
            upgrade()
            # The settings `flask db migrate` compares with (compare_type and all).
            options = dict(app.extensions["migrate"].configure_args)
            with db.engine.connect() as conn:
                context = MigrationContext.configure(
                    conn, opts={**options, "target_metadata": Base.metadata}
                )
                differences = compare_metadata(context, Base.metadata)

        assert differences == []
        assert options.get("compare_type") is True
        assert {t.name for t in Base.metadata.sorted_tables} <= table_names(app)


def test_flask_db_upgrade_builds_the_schema_from_empty(backend, fresh_database_url):
    with app_on_fresh_database(backend, fresh_database_url) as app:
        assert table_names(app) == set()

        result = app.test_cli_runner().invoke(args=["db", "upgrade"])

        assert result.exit_code == 0, result.output
        assert current_revision(app) == head_revision(app)
        assert {"activity_events", "player_stats", "reconciliation_runs"} <= table_names(app)


def test_the_first_revision_refuses_to_downgrade_and_keeps_the_events(backend, fresh_database_url):
    with app_on_fresh_database(backend, fresh_database_url) as app:
        with app.app_context():
            upgrade(revision=FIRST_REVISION)
        add_player_with_an_event(app)

        refused = pytest.raises(RuntimeError, match="refusing to downgrade.*activity_events")
        with app.app_context(), refused:
            alembic_command.downgrade(migrations_config(app), "base")

        assert current_revision(app) == FIRST_REVISION
        assert "activity_events" in table_names(app)
        assert event_count(app) == 1


def test_downgrading_to_base_from_head_changes_nothing(backend, fresh_database_url):
    with app_on_fresh_database(backend, fresh_database_url) as app:
        with app.app_context():
            upgrade()
        add_player_with_an_event(app)
        tables_before = table_names(app)

        result = app.test_cli_runner().invoke(args=["db", "downgrade", "base"])

        assert result.exit_code != 0

        assert current_revision(app) == head_revision(app)
        assert table_names(app) == tables_before
        assert event_count(app) == 1


def test_stored_results_become_decided_and_their_placements_keep_pointing_at_them(
    backend, fresh_database_url
):
    """The void-results revision copies tournament_results on SQLite, which placements reference."""
    with app_on_fresh_database(backend, fresh_database_url) as app:
        with app.app_context():
            upgrade(revision="e1b7d3f85a54")
        add_player_with_an_event(app)
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO tournaments (id, name, is_private, is_team_based, awards_winner, "
                    "starts_at, ends_at, created_at) VALUES (1, 'Cup', false, false, true, :now, :now, :now)"
                ),
                {"now": T0},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO tournament_results (id, tournament_id, winner_player_id, decided_at, "
                    "created_at) VALUES (1, 1, 1, :now, :now)"
                ),
                {"now": T0},
            )
            conn.execute(sa.text("INSERT INTO placements (id, result_id, place, player_id) VALUES (1, 1, 1, 1)"))

        with app.app_context():
            upgrade()

        with app.app_context(), db.engine.connect() as conn:
            assert conn.execute(
                sa.text("SELECT status, winner_player_id FROM tournament_results")).all() == [("decided", 1)]
            assert conn.execute(sa.text("SELECT result_id FROM placements")).all() == [(1,)]
            if backend == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []


def _insert_event(conn, source_id: int, event_id: int | None = None) -> int:
    columns = "player_id, event_type, occurred_at, recorded_at, source_model, source_id, origin, is_private, metadata"
    values = "1, 'tournament_registered', :now, :now, 'registration', :source, 'live', false, '{}'"
    if event_id is not None:
        columns, values = f"id, {columns}", f":id, {values}"
    return conn.execute(
        sa.text(f"INSERT INTO activity_events ({columns}) VALUES ({values}) RETURNING id"),
        {"now": T0, "source": source_id, "id": event_id},
    ).scalar_one()


def test_events_keep_their_ids_across_the_never_reused_ids_revision_and_back(backend, fresh_database_url):
    """On SQLite that revision copies activity_events into a table with AUTOINCREMENT."""
    with app_on_fresh_database(backend, fresh_database_url) as app:
        with app.app_context():
            upgrade(revision="a2c8e4f96b65")
        add_player_with_an_event(app)
        with app.app_context(), db.engine.begin() as conn:
            _insert_event(conn, source_id=2, event_id=40)
            newest = _insert_event(conn, source_id=3, event_id=41)
            if backend == "postgresql":  # ids given by hand: move the sequence past them, as a load would
                conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('activity_events', 'id'), 41)")

        with app.app_context():
            upgrade()
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM activity_events WHERE id = :id"), {"id": newest})
            after_delete = _insert_event(conn, source_id=4)
        assert after_delete > newest

        with app.app_context():
            alembic_command.downgrade(migrations_config(app), "a2c8e4f96b65")
        with app.app_context(), db.engine.connect() as conn:
            ids = conn.scalars(sa.text("SELECT id FROM activity_events ORDER BY id")).all()
            index = conn.scalar(sa.text(
                "SELECT count(*) FROM sqlite_master WHERE name = 'uq_activity_events_reverses_event_id' "
                "AND sql LIKE '%WHERE reverses_event_id IS NOT NULL%'"
                if backend == "sqlite" else
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'uq_activity_events_reverses_event_id' "
                "AND indexdef LIKE '%WHERE (reverses_event_id IS NOT NULL)%'"
            ))
        assert ids[1:] == [40, after_delete] and len(ids) == 3
        assert index == 1


def test_job_runs_keep_their_progress_across_the_attempts_revision_and_back(backend, fresh_database_url):
    """On SQLite going back copies job_runs, which backfill batches reference."""
    with app_on_fresh_database(backend, fresh_database_url) as app:
        with app.app_context():
            upgrade(revision="b3d9f5a07c76")
        add_player_with_an_event(app)
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO job_runs (id, kind, params, status, cancel_requested, progress_done, "
                    "progress_total, checkpoint, started_at, created_at) VALUES (7, 'backfill', '{}', "
                    "'cancelled', false, 500, 1000, '{\"after_match_id\": 81234}', :now, :now)"
                ),
                {"now": T0},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO backfill_batches (id, run_id, batch_no, rows_read, events_inserted, "
                    "duplicates, rejected_forfeit, rejected_no_show, failed, started_at) "
                    "VALUES (1, 7, 1, 500, 480, 0, 0, 0, 0, :now)"
                ),
                {"now": T0},
            )
        run_row = "SELECT id, status, progress_done, progress_total FROM job_runs"

        with app.app_context():
            upgrade()
        with app.app_context(), db.engine.connect() as conn:
            assert conn.execute(sa.text(run_row)).all() == [(7, "cancelled", 500, 1000)]
            assert conn.execute(
                sa.text("SELECT attempt_started_at, attempt_done_from FROM job_runs")
            ).all() == [(None, None)]

        with app.app_context():
            alembic_command.downgrade(migrations_config(app), "b3d9f5a07c76")
        with app.app_context(), db.engine.connect() as conn:
            assert conn.execute(sa.text(run_row)).all() == [(7, "cancelled", 500, 1000)]
            assert conn.scalar(sa.text("SELECT run_id FROM backfill_batches")) == 7
        assert event_count(app) == 1


def test_a_cancelled_reconciliation_run_keeps_its_drift_rows_and_is_called_failed_below_its_revision(
    backend, fresh_database_url
):
    """On SQLite changing the status check copies reconciliation_runs, which drift rows reference."""
    with app_on_fresh_database(backend, fresh_database_url) as app:
        with app.app_context():
            upgrade()
        add_player_with_an_event(app)
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO reconciliation_runs (id, started_at, finished_at, status, fix, "
                    "players_checked, players_drifted, players_fixed, error) VALUES (3, :now, :now, "
                    "'cancelled', true, 10, 2, 1, 'cancelled by staff (job run 9)')"
                ),
                {"now": T0},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO reconciliation_drifts (run_id, player_id, scope, stat, expected, actual) "
                    "SELECT 3, id, 'all', 'matches_won', 1, 0 FROM players"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO job_runs (id, kind, params, status, cancel_requested, progress_done, "
                    "created_at, requested_via) VALUES (9, 'reconcile', '{}', 'cancelled', true, 1, "
                    ":now, 'command line (ops@host)')"
                ),
                {"now": T0},
            )
        run_row = "SELECT id, status, players_fixed, error FROM reconciliation_runs"

        with app.app_context():
            alembic_command.downgrade(migrations_config(app), "c15b0d741ab8")
        with app.app_context(), db.engine.connect() as conn:
            assert conn.execute(sa.text(run_row)).all() == [(3, "failed", 1, "cancelled by staff (job run 9)")]
            assert conn.scalar(sa.text("SELECT count(*) FROM reconciliation_drifts WHERE run_id = 3")) == 1
            assert conn.execute(sa.text("SELECT id, status FROM job_runs")).all() == [(9, "cancelled")]
        assert event_count(app) == 1

        with app.app_context():
            upgrade()
            assert current_revision(app) == head_revision(app)
