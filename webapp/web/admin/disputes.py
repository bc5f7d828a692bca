"""Trust and safety: the dispute queue, match pages, case files and resolutions.

Only ``admin`` and ``trust_safety`` reach these pages. Every view reads the
same way: load, check access, call ``webapp.domain.disputes``, render.

Resolving is two posts of one form. "Preview" plans the resolution without
writing and shows every event and stat change it would make; "Confirm" sends
the same fields again and the domain builds the same plan inside its
transaction and writes exactly it. The form carries the match version the
page was opened at, so a match resolved (or reported) by someone else since
gets the "changed since you opened it" message instead of a second
resolution, and a token made when the page was opened, so a double submit
stores one resolution.

Opening a case file is recorded (who looked at it, and in the audit trail):
the one write a GET makes here.
"""

from __future__ import annotations

import secrets

from flask import flash, redirect, request, url_for
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, RadioField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length
from wtforms.widgets import HiddenInput

from webapp.domain import disputes as domain
from webapp.domain.disputes import MatchChanged
from webapp.domain.errors import Invalid
from webapp.extensions import db
from webapp.transaction import unit_of_work
from webapp.web.admin.base import SecureView
from webapp.web.auth import current_actor

TRUST_AND_SAFETY = ("admin", "trust_safety")
OUTCOME_LABELS = {"a": "Side A won", "b": "Side B won", "void": "Void the match"}


class ReportForm(FlaskForm):
    reason = TextAreaField("Why is this result wrong?",
                           validators=[DataRequired(), Length(max=domain.REASON_MAX)])


class NoteForm(FlaskForm):
    body = TextAreaField("Evidence note", validators=[DataRequired(), Length(max=domain.NOTE_MAX)])


class ResolveForm(FlaskForm):
    outcome = RadioField("Corrected result",
                         choices=[SelectChoice(value, label) for value, label in OUTCOME_LABELS.items()],
                         validators=[InputRequired(message="Choose the corrected winner or void.")])
    reason = TextAreaField("Reason", validators=[DataRequired(message="A reason is required."),
                                                 Length(max=domain.REASON_MAX)])
    version = IntegerField(widget=HiddenInput(), validators=[InputRequired()])
    token = HiddenField(validators=[DataRequired(), Length(max=64)])


class DisputesView(SecureView):
    allowed_roles = TRUST_AND_SAFETY

    @expose("/")
    def index(self):
        status = request.args.get("status", "open")
        if status not in ("open", "resolved"):
            status = "open"
        queue = domain.dispute_queue(db.session(), status=status)
        return self.render("admin/disputes/queue.html", queue=queue, status=status)

    # The match page.

    @expose("/matches/find")
    def find_match(self):
        reference = request.args.get("match", "").strip()
        if not reference:
            return redirect(url_for(".index"))
        match = domain.match_by_reference(db.session(), reference[:100])
        return redirect(url_for(".match", match_id=match.id))

    @expose("/matches/<int:match_id>")
    def match(self, match_id: int):
        return self._match_page(match_id, ReportForm())

    @expose("/matches/<int:match_id>/report", methods=["POST"])
    def report(self, match_id: int):
        form = ReportForm()
        if not form.validate_on_submit():
            return self._match_page(match_id, form, status=400)
        with unit_of_work(db.session()):
            outcome = domain.report_dispute(db.session(), current_actor(), match_id, form.reason.data,
                                            source="staff")
            dispute_id = outcome.dispute.id
        flash("The match is marked disputed." if outcome.opened else "Your report was added to the open case.",
              "success")
        return redirect(url_for(".case", dispute_id=dispute_id))

    def _match_page(self, match_id: int, form: ReportForm, *, status: int = 200):
        record = domain.match_record(db.session(), match_id)
        return self.render("admin/disputes/match.html", record=record, form=form, players=record.players,
                           disputable=record.match.state in domain.DISPUTABLE_STATES), status

    # The case file.

    @expose("/cases/<int:dispute_id>")
    def case(self, dispute_id: int):
        session = db.session()
        with unit_of_work(session):
            domain.record_case_view(session, current_actor(), dispute_id)
        case = domain.case_file(session, dispute_id)
        form = ResolveForm(formdata=None, version=case.record.match.version, token=secrets.token_urlsafe(24))
        return self._case_page(case, resolve_form=form)

    @expose("/cases/<int:dispute_id>/notes", methods=["POST"])
    def add_note(self, dispute_id: int):
        form = NoteForm()
        if not form.validate_on_submit():
            flash("A note needs some text (at most 5,000 characters).", "danger")
            return redirect(url_for(".case", dispute_id=dispute_id))
        with unit_of_work(db.session()):
            domain.add_note(db.session(), current_actor(), dispute_id, form.body.data)
        flash("Note added.", "success")
        return redirect(url_for(".case", dispute_id=dispute_id))

    @expose("/cases/<int:dispute_id>/preview", methods=["POST"])
    def preview(self, dispute_id: int):
        session = db.session()
        case, form, invalid = self._posted_resolution(dispute_id)
        if invalid:
            return invalid
        try:
            plan = domain.plan_resolution(session, case.dispute.match_id, form.outcome.data,
                                          expected_version=form.version.data)
        except MatchChanged as changed:
            return self._changed(case, changed)
        except Invalid as invalid:
            form.outcome.errors = [*form.outcome.errors, str(invalid)]
            return self._case_page(case, resolve_form=form, status=400)
        return self._case_page(case, resolve_form=form, preview=plan.as_json())

    @expose("/cases/<int:dispute_id>/resolve", methods=["POST"])
    def resolve(self, dispute_id: int):
        session = db.session()
        case, form, invalid = self._posted_resolution(dispute_id)
        if invalid:
            return invalid
        try:
            with unit_of_work(session):
                outcome = domain.resolve_dispute(
                    session, current_actor(), case.dispute.match_id, form.outcome.data, form.reason.data,
                    expected_version=form.version.data, token=form.token.data,
                )
                resolved_case = outcome.resolution.dispute_id
        except MatchChanged as changed:
            session.expire_all()
            return self._changed(domain.case_file(session, dispute_id), changed)
        if outcome.replayed:
            flash("This resolution was already recorded; nothing was written again.", "info")
        else:
            flash("The match is resolved; the correction events are recorded.", "success")
        return redirect(url_for(".case", dispute_id=resolved_case))

    def _posted_resolution(self, dispute_id: int):
        """Load the case and the resolve form posted for it, with the page answering an invalid form."""
        case = domain.case_file(db.session(), dispute_id)
        form = ResolveForm()
        if form.validate_on_submit():
            return case, form, None
        return case, form, self._case_page(case, resolve_form=form, status=400)

    def _changed(self, case: domain.CaseFile, error: MatchChanged):
        fresh = ResolveForm(formdata=None, version=case.record.match.version, token=secrets.token_urlsafe(24))
        return self._case_page(case, resolve_form=fresh, changed=str(error), status=409)

    def _case_page(self, case: domain.CaseFile, *, resolve_form: ResolveForm, preview: dict | None = None,
                   changed: str | None = None, status: int = 200):
        return self.render(
            "admin/disputes/case.html",
            case=case,
            record=case.record,
            resolve_form=resolve_form,
            note_form=NoteForm(formdata=None),
            preview=preview,
            changed=changed,
            outcome_labels=OUTCOME_LABELS,
            players=case.record.players,
        ), status
