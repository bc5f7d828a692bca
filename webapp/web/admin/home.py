"""The dashboard's front page."""

from __future__ import annotations

from flask_admin import expose
from sqlalchemy import select

from webapp.extensions import db
from webapp.models.reconciliation import ReconciliationRun
from webapp.web.admin.base import SecureIndexView


class HomeView(SecureIndexView):
    @expose("/")
    def index(self):
        last_run = db.session.scalars(
            select(ReconciliationRun).order_by(ReconciliationRun.id.desc()).limit(1)
        ).first()
        return self.render("admin/home.html", last_run=last_run)
