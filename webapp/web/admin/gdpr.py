"""GDPR requests: the list (overdue first), a request's page and timeline, and erasure.

Who
---
``privacy`` and ``admin`` only, on every route (the domain checks the roles
again). A request's page shows the requester's identity-verification text and
notes, which may hold personal data, so every view of it is audited as
``gdpr.request.view``.

Rhythm
------
Every action is a POST with the CSRF token: load the form, call the domain
in a unit of work, then redirect to the request's page with a flash saying
what happened. A refusal (an open dispute, a running export, the same person
approving their own erasure, identity not verified) re-renders the page with
the reason and the error's status (409, 400, 403) and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from flask import current_app, flash, redirect, request, url_for
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from webapp.domain import erasure, gdpr_requests
from webapp.domain.archive import ArchiveStorage
from webapp.domain.audit import record_audit
from webapp.domain.errors import DomainError
from webapp.extensions import db
from webapp.models.base import utcnow
from webapp.models.gdpr import REQUEST_KINDS, REQUEST_STATUSES
from webapp.models.players import Player
from webapp.transaction import unit_of_work
from webapp.web.admin.base import SecureView
from webapp.web.auth import current_actor
from webapp.web.errors import status_for

GDPR_ROLES = gdpr_requests.GDPR_ROLES


class OpenRequestForm(FlaskForm):
    kind = SelectField("Kind", choices=[SelectChoice(k, k.capitalize()) for k in REQUEST_KINDS])
    player = StringField("Player public id", validators=[DataRequired(), Length(max=20)])
    received_on = DateField("Received on", validators=[Optional()],
                            description="Leave empty for now; the request is due 30 days after.")


class VerifyForm(FlaskForm):
    how = TextAreaField(
        "How was the requester's identity verified?",
        validators=[DataRequired(), Length(max=gdpr_requests.MAX_TEXT)],
        description="e.g. replied from the account's email address; signed in and confirmed in "
                    "settings. Describe the check, do not copy documents or addresses here.",
    )


class NoteForm(FlaskForm):
    text = TextAreaField("Note", validators=[DataRequired(), Length(max=gdpr_requests.MAX_TEXT)])


class RefuseForm(FlaskForm):
    reason = TextAreaField("Reason", validators=[DataRequired(), Length(max=gdpr_requests.MAX_TEXT)])


class ActionForm(FlaskForm):
    """Carries only the CSRF token."""


class GdprRequestsView(SecureView):
    """List, open and work GDPR requests; ask for and approve erasures."""

    allowed_roles = GDPR_ROLES

    @expose("/")
    def index(self):
        return self._list(OpenRequestForm(formdata=None))

    @expose("/new", methods=("POST",))
    def create(self):
        form = OpenRequestForm()
        if not form.validate_on_submit():
            return self._list(form, status=400)
        session = db.session()
        try:
            with unit_of_work(session):
                opened = gdpr_requests.open_request(
                    session, current_actor(), form.kind.data, form.player.data,
                    _received_at(form.received_on.data),
                )
                request_id = opened.id
        except DomainError as error:
            flash(str(error), "danger")
            return self._list(form, status=status_for(error))
        flash(f"GDPR request {request_id} opened. Record how the requester's identity was "
              "verified before acting on it.", "success")
        return redirect(url_for(".detail", request_id=request_id), 303)

    @expose("/<int:request_id>")
    def detail(self, request_id: int):
        return self._page(request_id)

    @expose("/<int:request_id>/verify", methods=("POST",))
    def verify(self, request_id: int):
        form = VerifyForm()
        return self._act(request_id, form, "verify_form", lambda s, actor: (
            gdpr_requests.record_identity_verification(s, actor, request_id, form.how.data),
            "Identity verification recorded.",
        ))

    @expose("/<int:request_id>/notes", methods=("POST",))
    def note(self, request_id: int):
        form = NoteForm()
        return self._act(request_id, form, "note_form", lambda s, actor: (
            gdpr_requests.add_note(s, actor, request_id, form.text.data), "Note added.",
        ))

    @expose("/<int:request_id>/refuse", methods=("POST",))
    def refuse(self, request_id: int):
        form = RefuseForm()
        return self._act(request_id, form, "refuse_form", lambda s, actor: (
            gdpr_requests.refuse_request(s, actor, request_id, form.reason.data), "Request refused.",
        ))

    @expose("/<int:request_id>/erasure/request", methods=("POST",))
    def request_erasure(self, request_id: int):
        def act(s, actor):
            step = erasure.request_erasure(s, actor, request_id)
            return step, step.message
        return self._act(request_id, ActionForm(), None, act)

    @expose("/<int:request_id>/erasure/approve", methods=("POST",))
    def approve_erasure(self, request_id: int):
        storage = ArchiveStorage(current_app.config["ARCHIVE_URL"])

        def act(s, actor):
            step = erasure.erase_player(s, actor, request_id, storage=storage)
            message = step.message
            if step.result is not None:
                hits = step.result.total_hits
                message += (". The verification found no trace left." if not hits else
                            f". The verification found {hits} remaining hit(s): see the report.")
            return step, message
        return self._act(request_id, ActionForm(), None, act)

    # Helpers.

    def _act(self, request_id: int, form: FlaskForm, form_name: str | None, action):
        """Validate the form, run ``action(session, actor)`` in a unit of work, redirect or explain."""
        if not form.validate_on_submit():
            if form_name is None:
                flash("The form expired; reload the page and try again.", "danger")
                return self._page(request_id, status=400)
            return self._page(request_id, status=400, **{form_name: form})
        session = db.session()
        try:
            with unit_of_work(session):
                _, message = action(session, current_actor())
        except DomainError as error:
            flash(str(error), "danger")
            forms = {form_name: form} if form_name else {}
            return self._page(request_id, status=status_for(error), **forms)
        flash(message, "success")
        return redirect(url_for(".detail", request_id=request_id), 303)

    def _list(self, form: OpenRequestForm, *, status: int = 200):
        chosen = request.args.get("status") or None
        if chosen not in (None, *REQUEST_STATUSES):
            chosen = None
        session = db.session()
        rows = gdpr_requests.request_rows(session, chosen)
        overdue = len(gdpr_requests.overdue(session))
        return self.render(
            "admin/gdpr/requests.html", rows=rows, form=form, statuses=REQUEST_STATUSES,
            chosen=chosen, overdue_count=overdue,
        ), status

    def _page(self, request_id: int, *, status: int = 200, **forms):
        session = db.session()
        gdpr_request = gdpr_requests.get_request(session, request_id)
        player = session.get(Player, gdpr_request.player_id)
        # The page shows the verification text and notes: an unredacted view, audited.
        with unit_of_work(session):
            record_audit(session, current_actor(), "gdpr.request.view", target_type="gdpr_request",
                         target_id=request_id, player_id=gdpr_request.player_id)
        gdpr_request = gdpr_requests.get_request(session, request_id)
        people = gdpr_requests.staff_emails(session, {
            gdpr_request.handled_by_id, gdpr_request.verified_by_id,
            gdpr_request.erasure_requested_by_id, gdpr_request.approved_by_id,
            *(e.staff_id for e in gdpr_request.entries),
        })
        me = current_actor().staff_id
        return self.render(
            "admin/gdpr/request.html",
            gdpr_request=gdpr_request,
            player={"public_id": player.public_id, "display_name": player.display_name,
                    "deleted": player.is_deleted},
            people=people,
            overdue=gdpr_request.is_overdue(),
            verify_form=forms.get("verify_form") or VerifyForm(formdata=None),
            note_form=forms.get("note_form") or NoteForm(formdata=None),
            refuse_form=forms.get("refuse_form") or RefuseForm(formdata=None),
            action_form=ActionForm(),
            may_approve=gdpr_request.status == "awaiting_approval"
            and gdpr_request.erasure_requested_by_id != me,
            report=gdpr_request.verification_report,
        ), status


def _received_at(day: date | None) -> datetime:
    """The moment a request was received: now for today (or no date), else that day's start (UTC).

    A day in the future is passed on for the domain to refuse.
    """
    now = utcnow()
    if day is None or day == now.date():
        return now
    return datetime.combine(day, time(), UTC)
