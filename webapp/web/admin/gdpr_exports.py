"""GDPR exports: start one for a request, follow it, and download its files through signed links.

Who
---
``privacy`` and ``admin`` only, for every route here, the download included:
a link on its own is worth nothing without a signed-in staff member with one
of those roles (the domain checks the roles again).

The panel
---------
A GDPR request's page includes ``admin/gdpr/_export_panel.html``, which loads
``panel`` with htmx. The panel lists the request's exports with their run's
status; while one is queued or running it asks for itself again every
second. Starting an export is a POST carrying the CSRF token; it answers with
the panel.

Links
-----
Each ready export offers its JSON, CSV and manifest through links signed with
the app's ``SECRET_KEY`` (itsdangerous, salted for this use only) that carry
the export id and the file. A link is good for
``GDPR_EXPORT_LINK_MAX_AGE_SECONDS`` (one hour by default) from when the page
showed it, and never after the export itself expires. An expired link gets
410, a tampered one 403; both attempts are audited, and so is every download
(with a row in ``gdpr_export_downloads``).
"""

from __future__ import annotations

from functools import partial

from flask import current_app, redirect, render_template, request, send_file, url_for
from flask_admin import expose
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from webapp.domain import gdpr_export, gdpr_requests
from webapp.domain.errors import DomainError, NotFound
from webapp.domain.jobs import progress_of
from webapp.extensions import db
from webapp.jobs.queue import enqueue_run
from webapp.models.base import utcnow
from webapp.models.gdpr_exports import EXPORT_FILES
from webapp.transaction import after_commit, unit_of_work
from webapp.web.admin.base import SecureView
from webapp.web.auth import current_actor
from webapp.web.errors import status_for

EXPORT_ROLES = gdpr_requests.GDPR_ROLES
LINK_SALT = "activity-ops.gdpr-export.download"
DOWNLOAD_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "manifest": "application/json",
}


class StartExportForm(FlaskForm):
    """Carries only the CSRF token."""


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=LINK_SALT)


def sign_link(export_id: int, file: str) -> str:
    """Return the signed token of a download of ``file`` of export ``export_id``."""
    return _serializer().dumps({"export": export_id, "file": file})


def _read_link(token: str) -> tuple[int, str]:
    """Return (export id, file) from a token; raises itsdangerous errors when bad or too old."""
    max_age = current_app.config["GDPR_EXPORT_LINK_MAX_AGE_SECONDS"]
    data = _serializer().loads(token, max_age=max_age)
    return int(data["export"]), str(data["file"])


def _unverified_claims(token: str) -> dict:
    """What an expired token claims (its signature was valid), for the audit entry."""
    try:
        _ok, data = _serializer().loads_unsafe(token)
    except Exception:  # noqa: BLE001 - a token that cannot even be parsed claims nothing
        return {}
    return data if isinstance(data, dict) else {}


class GdprExportsView(SecureView):
    """Every export, a request's export panel, starting exports and downloading them."""

    allowed_roles = EXPORT_ROLES

    @expose("/")
    def index(self):
        session = db.session()
        rows = gdpr_export.recent_exports(session)
        downloads = gdpr_export.download_counts(session, (e.id for e, _run in rows))
        return self.render("admin/gdpr/exports.html", rows=rows, downloads=downloads,
                           now=utcnow())

    @expose("/requests/<int:request_id>/panel")
    def panel(self, request_id: int):
        return self._panel(request_id)

    @expose("/requests/<int:request_id>/start", methods=("POST",))
    def start(self, request_id: int):
        if not StartExportForm().validate_on_submit():
            return self._panel(
                request_id, refusal="The form expired; reload the page and try again.", status=400
            )
        session = db.session()
        config = current_app.config
        try:
            with unit_of_work(session):
                export = gdpr_export.start_export(
                    session, current_actor(), request_id,
                    storage_url=config["GDPR_EXPORT_URL"],
                    archive_url=config["ARCHIVE_URL"],
                    link_max_age_seconds=config["GDPR_EXPORT_LINK_MAX_AGE_SECONDS"],
                )
                after_commit(session, partial(enqueue_run, current_app._get_current_object(),
                                              export.job_run_id))
        except DomainError as exc:
            # htmx swaps only successful responses: the panel that says why must be one.
            status = 200 if request.headers.get("HX-Request") else status_for(exc)
            return self._panel(request_id, refusal=f"Nothing was started: {exc}", status=status)
        if not request.headers.get("HX-Request"):
            return redirect(url_for(".index"), 303)
        return self._panel(request_id, started=True)

    @expose("/download/<token>")
    def download(self, token: str):
        session = db.session()
        actor = current_actor()
        try:
            export_id, file = _read_link(token)
        except SignatureExpired:
            claims = _unverified_claims(token)
            with unit_of_work(session):
                gdpr_export.record_refused_download(
                    session, actor, "expired", _int_or_none(claims.get("export")),
                    claims.get("file") if claims.get("file") in EXPORT_FILES else None,
                )
            return self._refused(410, "This download link has expired. Open the request again "
                                      "for a fresh link.")
        except (BadSignature, KeyError, TypeError, ValueError):
            with unit_of_work(session):
                gdpr_export.record_refused_download(session, actor, "invalid signature")
            return self._refused(403, "This download link is not valid.")
        try:
            with unit_of_work(session):
                export, handle = gdpr_export.open_for_download(session, actor, export_id, file)
                download_name = export.url_of(file).rsplit("/", 1)[-1]
        except (gdpr_export.ExportUnavailable, NotFound) as exc:
            with unit_of_work(session):
                gdpr_export.record_refused_download(session, actor, str(exc), export_id, file)
            return self._refused(410, str(exc))
        response = send_file(handle, mimetype=DOWNLOAD_TYPES[file], as_attachment=True,
                             download_name=download_name, max_age=0)
        response.headers["Cache-Control"] = "no-store"
        return response

    def _refused(self, status: int, message: str):
        body = render_template("errors/error.html", status=status,
                               title="Link expired" if status == 410 else "Forbidden",
                               message=message)
        return current_app.make_response((body, status))

    def _panel(self, request_id: int, *, refusal: str | None = None, started: bool = False,
               status: int = 200):
        session = db.session()
        gdpr_request = gdpr_requests.get_request(session, request_id)
        rows = gdpr_export.exports_of_request(session, request_id)
        downloads = gdpr_export.download_counts(session, (e.id for e, _run in rows))
        now = utcnow()
        exports = [
            {
                "export": export,
                "run": run,
                "progress": progress_of(run, now),
                "downloads": downloads.get(export.id, 0),
                "offered": export.is_ready and not export.is_expired(now),
                "links": {file: url_for(".download", token=sign_link(export.id, file))
                          for file in EXPORT_FILES}
                if export.is_ready and not export.is_expired(now) else {},
                "error": (run.error or "").split("\n", 1)[0] if run.status == "failed" else None,
            }
            for export, run in rows
        ]
        active = any(not row["run"].is_finished for row in exports)
        body = render_template(
            "admin/gdpr/_export_panel_body.html",
            gdpr_request=gdpr_request,
            verified=gdpr_request.verified_at is not None,
            exports=exports,
            active=active,
            form=StartExportForm(),
            refusal=refusal,
            started=started,
            link_minutes=current_app.config["GDPR_EXPORT_LINK_MAX_AGE_SECONDS"] // 60,
        )
        response = current_app.make_response((body, status))
        response.headers["Cache-Control"] = "no-store"
        return response


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
