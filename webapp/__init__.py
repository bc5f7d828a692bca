"""activity-ops: the system of record for player activity and stats."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from webapp.config import INSTANCE_DIR, PROJECT_ROOT, BaseConfig, config_from_env


def create_app(config: BaseConfig | None = None, overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the application for ``config`` (read from the environment by default)."""
    import webapp.database  # noqa: F401  (registers the SQLite pragmas and BEGIN handling)
    from webapp import latency, models  # noqa: F401  (models: every table on the shared metadata)
    from webapp.cli import register_cli
    from webapp.extensions import csrf, db, limiter, migrate
    from webapp.jobs.queue import init_queue
    from webapp.json_codec import OrjsonProvider
    from webapp.json_codec import loads as json_loads
    from webapp.web import register_web

    config = config or config_from_env()
    app = Flask(
        __name__,
        instance_path=str(INSTANCE_DIR),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.json = OrjsonProvider(app)
    app.config.from_object(config)
    if overrides:
        app.config.update(overrides)
    if not app.config.get("SECRET_KEY"):
        config.validate()

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = _in_utc(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    # JSON columns are read through orjson; they are still written by json.dumps.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        "json_deserializer": json_loads, **(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    }

    if app.config.get("PASSWORD_HASH_PROFILE"):
        from webapp.domain.staff import use_password_profile

        use_password_profile(app.config["PASSWORD_HASH_PROFILE"])
    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), compare_type=True)
    csrf.init_app(app)
    limiter.init_app(app)
    init_queue(app)
    latency.init_app(app)
    register_web(app)
    register_cli(app)
    return app


def _in_utc(engine_options: Mapping[str, Any]) -> dict[str, Any]:
    """Run PostgreSQL sessions in UTC, whatever the server's default zone.

    Times are stored and shown in UTC: psycopg then returns them in UTC with no
    conversion per row, and anything the database computes from a time (a day's
    boundary) means the same on every server.
    """
    connect_args = dict(engine_options.get("connect_args") or {})
    connect_args["options"] = f"{connect_args.get('options', '')} -c TimeZone=UTC".strip()
    return {**engine_options, "connect_args": connect_args}
