"""The Flask-Admin shell: built per app, so every test app has its own views."""

from __future__ import annotations

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from webapp.extensions import db


def init_admin(app: Flask) -> Admin:
    """Build the dashboard and every view on ``app``."""
    from webapp.web.admin.api_tokens import ApiTokensView
    from webapp.web.admin.disputes import DisputesView
    from webapp.web.admin.gdpr import GdprRequestsView
    from webapp.web.admin.gdpr_exports import GdprExportsView
    from webapp.web.admin.home import HomeView
    from webapp.web.admin.monitoring import MonitoringView
    from webapp.web.admin.operations import BackfillView, JobsView, ReconciliationView
    from webapp.web.admin.players import PlayersView, player_page_url
    from webapp.web.admin.records import MODEL_VIEWS

    admin = Admin(
        app,
        name="activity-ops",
        url="/admin",
        theme=Bootstrap4Theme(base_template="admin/master.html", fluid=True),
        index_view=HomeView(name="Overview", url="/admin"),
    )
    for view_class, model, name, category in MODEL_VIEWS:
        admin.add_view(
            view_class(model, db, name=name, category=category,
                       endpoint=f"records_{model.__tablename__}")
        )
    admin.add_view(MonitoringView(name="Monitoring", endpoint="monitoring", url="/admin/monitoring"))
    admin.add_view(PlayersView(name="Players", category="Activity", endpoint="players", url="/admin/players"))
    admin.add_view(JobsView(name="Jobs", category="Operations", endpoint="ops_jobs", url="/admin/operations/jobs"))
    admin.add_view(BackfillView(name="Backfill", category="Operations", endpoint="ops_backfill",
                                url="/admin/operations/backfill"))
    admin.add_view(ReconciliationView(name="Reconciliation", category="Operations", endpoint="ops_reconciliation",
                                      url="/admin/operations/reconciliation"))
    admin.add_view(GdprRequestsView(name="Requests", category="GDPR", endpoint="gdpr",
                                    url="/admin/gdpr"))
    admin.add_view(GdprExportsView(name="Exports", category="GDPR", endpoint="gdpr_exports",
                                   url="/admin/gdpr-exports"))
    admin.add_view(DisputesView(name="Disputes", category="Trust & safety", endpoint="disputes",
                                url="/admin/disputes"))
    admin.add_view(ApiTokensView(name="API tokens", category="Administration", endpoint="api_tokens",
                                 url="/admin/api-tokens"))
    app.jinja_env.globals["player_page_url"] = player_page_url
    return admin
