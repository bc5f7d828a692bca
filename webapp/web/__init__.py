"""Everything that knows about HTTP: sign-in, the dashboard, the JSON API."""

from __future__ import annotations

from flask import Flask, redirect, url_for


def register_web(app: Flask) -> None:
    """Attach blueprints, the dashboard, security headers and error pages to ``app``."""
    from webapp.web import api, auth, errors, metrics, security, traffic
    from webapp.web.admin import init_admin

    auth.init_app(app)
    security.init_app(app)
    traffic.init_app(app)
    errors.init_app(app)
    init_admin(app)
    api.init_app(app)
    metrics.init_app(app)

    @app.get("/")
    def root():
        return redirect(url_for("admin.index"))
