"""Alembic environment: runs against the app's engine, SQLite or PostgreSQL alike."""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

from webapp.models.base import UTCDateTime

config = context.config
if config.config_file_name is not None:
    # Keep loggers configured by the app (and by tests) working.
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db


def render_item(type_, obj, autogen_context):
    """Write our column types as plain SQLAlchemy types so migrations never import app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline():
    """Emit the SQL to standard output instead of running it."""
    context.configure(
        url=str(target_db.engine.url),
        target_metadata=target_db.metadata,
        literal_binds=True,
        render_item=render_item,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run the migrations on the app's database."""

    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")

    conf_args = dict(current_app.extensions["migrate"].configure_args)
    conf_args.setdefault("process_revision_directives", process_revision_directives)
    conf_args.setdefault("render_item", render_item)
    conf_args.setdefault("render_as_batch", True)
    conf_args.setdefault("compare_type", True)

    with target_db.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch operation copies a table and drops the old one, which rows of
            # other tables may reference: keys are checked once, after the migrations.
            # Set outside any transaction, where SQLite ignores it.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            if sqlite:
                # SQLite's DDL is transactional: a run of several revisions that
                # fails part way leaves the database as it found it, as on PostgreSQL.
                conf_args.setdefault("transactional_ddl", True)
            context.configure(connection=connection, target_metadata=target_db.metadata, **conf_args)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration left rows with broken foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                # The pool would hand this connection on with its keys unchecked:
                # drop it, so the next one is opened (with the keys on) afresh.
                connection.invalidate()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
