"""Monitoring: the overview of event volume, drift, latency, backfill progress and table size.

Who sees what
-------------
Every staff role opens the page and sees event volume, stats drift and the
reconciliation success rate: whether the system of record is healthy is
everyone's business. ``admin`` and ``engineer`` see everything, which adds
latency, backfill progress and the event table's size: how the system runs,
engineering's work (as on the Operations pages). The other roles are not
shown those charts, and their endpoints answer them 403.

Every chart reads rollups (``webapp.domain.monitoring``), never the event
table, so its endpoint answers quickly whatever the range. The page renders
every chart it shows; each chart then refreshes itself from its endpoint, and
the range links swap the "charts" block of the page (htmx, with the range in
the URL), so the page is never reloaded whole.
"""

from __future__ import annotations

from flask import abort, current_app, render_template, request
from flask_admin import expose
from flask_login import current_user

from webapp.domain.monitoring import RANGES, TimeRange, time_range
from webapp.extensions import db
from webapp.web.admin.base import ALL_ROLES, SecureView
from webapp.web.charts import CHARTS, Chart, ChartSpec
from webapp.web.partials import render_page_or_block

ENGINEERING_ROLES = ("admin", "engineer")
# Charts refresh at this pace; the rollups themselves move once a minute.
REFRESH_SECONDS = 60


def visible_charts() -> list[ChartSpec]:
    """The charts the signed-in staff member may see, in page order."""
    engineer = current_user.has_any_role(ENGINEERING_ROLES)
    return [spec for spec in CHARTS.values() if engineer or not spec.engineering]


def build_chart(spec: ChartSpec, span: TimeRange) -> Chart:
    """Build one chart from the rollups, with the thresholds the app is configured with."""
    return spec.build(
        db.session(),
        span,
        alert_bytes=current_app.config.get("EVENT_TABLE_ALERT_BYTES"),
        archive_after_days=current_app.config["ARCHIVE_AFTER_DAYS"],
    )


class MonitoringView(SecureView):
    allowed_roles = ALL_ROLES

    @expose("/")
    def index(self):
        span = time_range(request.args.get("range"))
        charts = [build_chart(spec, span) for spec in visible_charts()]
        return render_page_or_block(
            "admin/monitoring/index.html", "charts", render=self.render,
            span=span, ranges=RANGES, charts=charts, refresh_seconds=REFRESH_SECONDS,
        )

    @expose("/chart/<chart_name>")
    def chart(self, chart_name: str):
        spec = CHARTS.get(chart_name)
        if spec is None:
            abort(404)
        if spec.engineering and not current_user.has_any_role(ENGINEERING_ROLES):
            abort(403)
        span = time_range(request.args.get("range"))
        return render_template("admin/monitoring/_chart.html", chart=build_chart(spec, span), span=span,
                               refresh_seconds=REFRESH_SECONDS)
