"""Operations: job runs with live progress, the backfill and its safeguards, reconciliation.

Every view here reads the same way: load, check access, call the domain,
render. What a backfill would do, whether it may start, what a rollback would
delete and what parity found are all decided in ``webapp.domain.backfill``;
these views only collect the staff member's input and show the answers.

Who may look, who may act
-------------------------
Only ``admin`` and ``engineer``, and both may also start, cancel, resume and
roll back. The pages show job parameters, worker names, tracebacks and drift
by internal player id: how the system runs, which is engineering's work and
the admins' responsibility. ``trust_safety``, ``privacy`` and ``viewer`` work
with players and their records, none of which needs these pages, so they get
403 and the dashboard does not list the Operations pages for them.

Starting anything
-----------------
A run is stored queued by the domain (``queue_run`` writes the audit entry) in
one unit of work, and handed to the workers only once that commit succeeded
(``after_commit``), so a worker never looks for a run that was rolled back.
A backfill starts only when the staff member typed the number of events the
dry run said it would create (checked against a dry run taken again just
before the write transaction, not inside it) and, inside the peak window,
ticked the explicit override; it is refused above the request-rate limit
whatever they tick. A rollback asks for the number of events it would delete.

Live progress
-------------
``_partials/_job_progress.html`` is the status badge and progress bar of one
run, on the runs list, the run page and the backfill and reconciliation pages.
While the run is not finished it carries ``hx-get`` of ``JobsView.progress``
with ``hx-trigger="every 1s"`` and replaces itself; the block served once the
run has ended carries no trigger, so polling stops. A response whose status
differs from the one the page showed (queued to running, running to
succeeded) sends ``HX-Trigger: job-status-changed``, on which the run page
fetches its outcome block (details, buttons, result, ledger, parity) at once;
while the run goes on, that block also refreshes itself every few seconds, and
stops like the bar.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import partial
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, IntegerField, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from webapp.domain import backfill, jobs, operations
from webapp.domain.backfill import BackfillPreview, BackfillScope, ParityReport, Safeguards
from webapp.domain.errors import DomainError, Invalid
from webapp.domain.jobs import JOB_KINDS, RunProgress, progress_of
from webapp.extensions import db
from webapp.jobs.queue import enqueue_run
from webapp.jobs.runner import when_cancelled
from webapp.models.jobs import JobRun
from webapp.transaction import after_commit, unit_of_work
from webapp.web.admin.base import SecureView
from webapp.web.auth import current_actor
from webapp.web.errors import status_for
from webapp.web.partials import render_page_or_block
from webapp.web.traffic import current_request_rate

OPERATIONS_ROLES = ("admin", "engineer")

RUNS_PAGE_SIZE = 50
LEDGER_PAGE_SIZE = 100
HISTORY_PAGE_SIZE = 25
DRIFT_PAGE_SIZE = 25
# A batch is one transaction: much larger ones hold locks longer than live traffic should wait.
MAX_BATCH_SIZE = 10_000
# Ids fit a BIGINT column, so a long one is a form error rather than a database error.
MAX_ID = 2**62

# What a run's progress counts, by kind.
PROGRESS_UNITS = {
    "backfill": "records",
    "backfill_rollback": "events",
    "reconcile": "players",
}
# Sent by the progress block when the run's status changed since the page last saw it.
STATUS_EVENT = "job-status-changed"
# Between status changes, the run page's ledger and details follow a running job at this pace.
OUTCOME_REFRESH_SECONDS = 3

SCOPE_FIELDS = ("tournament_from", "tournament_to", "before", "batch_size")
_THOUSANDS = re.compile(r"[,_\s\u202f\u00a0']")


# Forms.


class ScopeForm(FlaskForm):
    """Which history a backfill covers, and its batch size; read from the query string for a dry run."""

    class Meta:
        csrf = False  # a dry run is a GET and writes nothing

    tournament_from = IntegerField(
        "First tournament id", validators=[Optional(), NumberRange(min=1, max=MAX_ID)]
    )
    tournament_to = IntegerField(
        "Last tournament id", validators=[Optional(), NumberRange(min=1, max=MAX_ID)]
    )
    before = DateField("Only tournaments that started before (UTC)", validators=[Optional()])
    batch_size = IntegerField(
        "Batch size", validators=[Optional(), NumberRange(min=1, max=MAX_BATCH_SIZE)]
    )

    def scope(self) -> BackfillScope:
        before = self.before.data
        return BackfillScope(
            tournament_from=self.tournament_from.data,
            tournament_to=self.tournament_to.data,
            before=datetime.combine(before, time(), UTC) if before else None,
        )

    def chosen_batch_size(self) -> int:
        return self.batch_size.data or current_app.config["BACKFILL_BATCH_SIZE"]

    def as_args(self) -> dict[str, Any]:
        """Return the scope and batch size as query-string or hidden-field values."""
        return {
            "tournament_from": self.tournament_from.data,
            "tournament_to": self.tournament_to.data,
            "before": self.before.data.isoformat() if self.before.data else None,
            "batch_size": self.chosen_batch_size(),
        }


def typed_number(text: str | None) -> int | None:
    """Read a count a person typed, thousands separators allowed; None if it is not one."""
    digits = _THOUSANDS.sub("", text or "")
    return int(digits) if digits.isdigit() and len(digits) <= 18 else None


class ConfirmedNumber:
    """The field must hold a whole number (the count staff read on the page)."""

    def __call__(self, form, field) -> None:
        if typed_number(field.data) is None:
            raise ValidationError("Type the number as digits, e.g. 1234 or 1,234.")


class StartForm(ScopeForm):
    class Meta:
        csrf = True

    confirm_events = StringField(
        "Number of events to create",
        validators=[DataRequired(message="Type the number of events the dry run will create."),
                    Length(max=40), ConfirmedNumber()],
    )
    override_peak_window = BooleanField("Start inside the peak window")


class ActionForm(FlaskForm):
    """Carries only the CSRF token."""


class ResumeForm(FlaskForm):
    override_peak_window = BooleanField("Resume inside the peak window")


class RollbackForm(FlaskForm):
    confirm_events = StringField(
        "Number of events to delete",
        validators=[DataRequired(message="Type the number of events the rollback will delete."),
                    Length(max=40), ConfirmedNumber()],
    )


class ReconcileForm(FlaskForm):
    mode = SelectField(
        "What to do",
        choices=["check", "fix"],
        validators=[DataRequired()],
    )


# How a run's progress reads.


@dataclass(frozen=True)
class JobStatus:
    """One run as its status badge and progress bar show it."""

    run: JobRun
    requested_by: str | None
    progress: RunProgress
    # Whole percent, rounded down so 100 means done; None while the total is unknown.
    percent: int | None
    unit: str
    rate: str | None
    time_left: str | None


def job_status(run: JobRun, requested_by: str | None = None) -> JobStatus:
    """Present a run's progress: share done, rate and estimated time left."""
    progress = progress_of(run)
    percent = None if progress.percent is None else math.floor(progress.percent)
    unit = PROGRESS_UNITS.get(run.kind, "items")
    rate = None
    if progress.rate_per_second:
        rate = f"{progress.rate_per_second:,.1f} {unit}/s"
    time_left = None
    if progress.seconds_left is not None:
        time_left = duration(progress.seconds_left)
    return JobStatus(run, requested_by, progress, percent, unit, rate, time_left)


def duration(seconds: float) -> str:
    """Say a duration the way people read one: "45 s", "3 min 20 s", "2 h 05 min"."""
    whole = round(seconds)
    if whole < 1:
        return "under a second"
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# Rendering.


def _int_arg(name: str) -> int | None:
    value = (request.args.get(name) or "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise Invalid(f"{name!r} must be a whole number, not {value!r}")
    return int(value)


def _safeguards(force: bool) -> Safeguards:
    app = current_app._get_current_object()
    return backfill.current_safeguards(app.config, current_request_rate(app), force=force)


def _in_peak_window() -> bool:
    return backfill.in_peak_window(datetime.now(UTC), current_app.config["BACKFILL_PEAK_WINDOW"])


def _enqueue_after_commit(session, run_id: int) -> None:
    after_commit(session, partial(enqueue_run, current_app._get_current_object(), run_id))


def _run_page(run_id: int):
    return redirect(url_for("ops_jobs.run", run_id=run_id), 303)


# Job runs.


@dataclass(frozen=True)
class BackfillRunDetails:
    """What a backfill run's page shows beyond its progress."""

    scope: BackfillScope
    lines: list[backfill.BatchLine]
    ledger_page: int
    ledger_pages: int
    batches_committed: int
    totals: backfill.BatchCounts
    parity: ParityReport | None
    parity_checked_now: bool
    rollbacks: list[JobRun]
    rollback_plan: backfill.RollbackPlan | None
    rollback_refusal: str | None


class JobsView(SecureView):
    """Every stored job run: the list, one run's page, its live progress, cancel, resume, rollback."""

    allowed_roles = OPERATIONS_ROLES

    @expose("/")
    def index(self):
        kind = request.args.get("kind") or None
        if kind is not None and kind not in JOB_KINDS:
            raise Invalid(f"there is no job kind {kind!r}")
        page = operations.job_runs(db.session(), kind=kind, before_id=_int_arg("before"),
                                   limit=RUNS_PAGE_SIZE)
        return render_page_or_block(
            "admin/operations/jobs.html",
            "runs",
            render=self.render,
            runs=[job_status(listing.run, listing.requested_by) for listing in page.listings],
            next_before=page.next_before,
            kind=kind,
            kinds=JOB_KINDS,
        )

    @expose("/<int:run_id>")
    def run(self, run_id: int):
        """The run's page; with htmx, only its outcome block (fetched again when the run ends)."""
        return render_page_or_block(
            "admin/operations/run.html", "outcome", render=self.render, **self._run_context(run_id)
        )

    @expose("/<int:run_id>/progress")
    def progress(self, run_id: int):
        """The run's status and progress bar, polling itself while the run is not finished."""
        run = jobs.get_run(db.session(), run_id)
        body = render_template(
            "_partials/_job_progress.html", job=job_status(run), compact=request.args.get("compact") == "1"
        )
        response = current_app.make_response(body)
        response.headers["Cache-Control"] = "no-store"
        if request.args.get("seen", run.status) != run.status:
            response.headers["HX-Trigger"] = STATUS_EVENT
        return response

    @expose("/<int:run_id>/cancel", methods=("POST",))
    def cancel(self, run_id: int):
        if not ActionForm().validate_on_submit():
            return self._refused(run_id, "The form expired; try again.")
        session = db.session()
        try:
            with unit_of_work(session):
                run = jobs.request_cancel(session, current_actor(), run_id)
                status, kind = run.status, run.kind
        except DomainError as exc:
            return self._refused(run_id, str(exc))
        if status == "cancelled":
            flash(f"Run {run_id} was cancelled before it started.", "success")
        else:
            flash(f"Run {run_id} {when_cancelled(kind)}", "info")
        return _run_page(run_id)

    @expose("/<int:run_id>/resume", methods=("POST",))
    def resume(self, run_id: int):
        form = ResumeForm()
        if not form.validate_on_submit():
            return self._refused(run_id, "The form expired; try again.")
        session = db.session()
        try:
            with unit_of_work(session):
                operations.resume_job(
                    session, current_actor(), run_id,
                    safeguards=_safeguards(bool(form.override_peak_window.data)),
                )
                _enqueue_after_commit(session, run_id)
        except DomainError as exc:
            return self._refused(run_id, str(exc))
        flash(f"Run {run_id} is queued again; it continues from its last checkpoint.", "success")
        return _run_page(run_id)

    @expose("/<int:run_id>/rollback", methods=("POST",))
    def rollback(self, run_id: int):
        form = RollbackForm()
        if not form.validate_on_submit():
            errors = [error for field in form for error in field.errors]
            return self._refused(run_id, " ".join(errors) or "The form expired; try again.")
        typed = typed_number(form.confirm_events.data)
        session = db.session()
        try:
            with unit_of_work(session):
                plan = backfill.plan_rollback(session, run_id)
                if typed != plan.events:
                    raise Invalid(
                        f"the confirmation says {typed:,} events, but rolling back run {run_id} "
                        f"would delete {plan.events:,}; nothing was started"
                    )
                rollback_id = backfill.start_rollback(
                    session, current_actor(), run_id,
                    batch_size=current_app.config["BACKFILL_BATCH_SIZE"],
                ).id
                _enqueue_after_commit(session, rollback_id)
        except DomainError as exc:
            return self._refused(run_id, str(exc))
        flash(f"Rollback of backfill run {run_id} queued as run {rollback_id}: "
              f"{plan.events:,} events of {plan.players:,} players will be deleted.", "success")
        return _run_page(rollback_id)

    def _refused(self, run_id: int, message: str):
        flash(f"Nothing was done: {message}", "danger")
        return _run_page(run_id)

    def _run_context(self, run_id: int) -> dict[str, Any]:
        session = db.session()
        listing = operations.job_run(session, run_id)
        run = listing.run
        context: dict[str, Any] = {
            "job": job_status(run, listing.requested_by),
            "run": run,
            "action_form": ActionForm(),
            "resume_form": ResumeForm(),
            "rollback_form": RollbackForm(),
            "in_peak_window": _in_peak_window(),
            "peak_window": current_app.config["BACKFILL_PEAK_WINDOW"],
            "status_event": STATUS_EVENT,
            "outcome_refresh_seconds": OUTCOME_REFRESH_SECONDS,
            "when_cancelled": when_cancelled(run.kind),
            "backfill": None,
        }
        if run.kind == "backfill":
            context["backfill"] = self._backfill_details(run)
        return context

    def _backfill_details(self, run: JobRun) -> BackfillRunDetails:
        session = db.session()
        lines = backfill.ledger(session, run.id)
        pages = max(1, math.ceil(len(lines) / LEDGER_PAGE_SIZE))
        page = min(max(_int_arg("ledger_page") or 1, 1), pages)
        stored = (run.result or {}).get("parity")
        # Parity reads every source table in scope: checked when the run ends, again only on request.
        recheck = request.args.get("recheck") == "1" and run.is_finished
        parity = None
        if recheck:
            parity = backfill.parity_check(session, run.id)
        elif stored is not None:
            parity = ParityReport.from_list(stored)
        rollbacks = backfill.rollbacks_of(session, run.id)
        plan, refusal = None, None
        if run.is_finished and not rollbacks:
            try:
                plan = backfill.plan_rollback(session, run.id)
            except DomainError as exc:
                refusal = str(exc)
        return BackfillRunDetails(
            scope=BackfillScope.from_params(run.params.get("scope")),
            lines=lines[(page - 1) * LEDGER_PAGE_SIZE : page * LEDGER_PAGE_SIZE],
            ledger_page=page,
            ledger_pages=pages,
            batches_committed=sum(line.committed for line in lines),
            totals=backfill.ledger_totals(lines),
            parity=parity,
            parity_checked_now=recheck,
            rollbacks=rollbacks,
            rollback_plan=plan,
            rollback_refusal=refusal,
        )


# The backfill.


class BackfillView(SecureView):
    """Choose a scope, see the dry run, and start the backfill under its safeguards."""

    allowed_roles = OPERATIONS_ROLES

    @expose("/")
    def index(self):
        """The form; with ``preview`` in the query, the dry run too (alone for htmx)."""
        form = ScopeForm(formdata=request.args)
        report, refusal, status = None, None, 200
        if "preview" in request.args:
            form.validate()
            report, refusal, status = self._preview(form)
            if request.headers.get("HX-Request"):
                # htmx swaps only successful responses: the block that says what is wrong must be one.
                status = 200
        return render_page_or_block(
            "admin/operations/backfill.html", "report", render=self.render, status=status,
            **self._context(form, report, refusal, StartForm(formdata=None)),
        )

    @expose("/start", methods=("POST",))
    def start(self):
        form = StartForm()
        if not form.validate_on_submit():
            report, refusal, status = self._preview(form)
            if refusal is None:
                refusal, status = "Nothing was started: correct the form below.", 400
            return self._render_refused(form, report, refusal, status)
        # The typed number is checked against a dry run taken now, in its own read
        # transaction: inside the unit of work it would hold the write lock throughout.
        report, refusal, status = self._preview(form)
        if report is None:
            return self._render_refused(form, None, f"Nothing was started: {refusal}", status)
        session = db.session()
        try:
            with unit_of_work(session):
                run = backfill.start_backfill(
                    session,
                    current_actor(),
                    form.scope(),
                    safeguards=_safeguards(bool(form.override_peak_window.data)),
                    batch_size=form.chosen_batch_size(),
                    pause_seconds=current_app.config["BACKFILL_PAUSE_SECONDS"],
                    dry_run=report,
                    confirmed_events=typed_number(form.confirm_events.data),
                )
                run_id = run.id
                _enqueue_after_commit(session, run_id)
        except DomainError as exc:
            return self._render_refused(form, report, f"Nothing was started: {exc}", status_for(exc))
        flash(f"Backfill run {run_id} queued; its progress is below.", "success")
        return _run_page(run_id)

    def _render_refused(self, form: StartForm, report: BackfillPreview | None, refusal: str, status: int):
        """The page again after a refused start: the dry run, the typed values and why it was refused."""
        return render_page_or_block(
            "admin/operations/backfill.html", "report", render=self.render, status=status,
            **self._context(form, report, refusal, form),
        )

    def _preview(self, form: ScopeForm) -> tuple[BackfillPreview | None, str | None, int]:
        """Run the dry run for the (validated) form's scope: (report, refusal, status)."""
        if any(getattr(form, name).errors for name in SCOPE_FIELDS):
            return None, "Correct the scope below.", 400
        try:
            report = backfill.preview(db.session(), form.scope(), batch_size=form.chosen_batch_size())
        except DomainError as exc:
            return None, str(exc), status_for(exc)
        finally:
            db.session.rollback()  # a dry run writes nothing; end its read transaction
        return report, None, 200

    def _context(self, form: ScopeForm, report: BackfillPreview | None, refusal: str | None,
                 start_form: StartForm) -> dict[str, Any]:
        config = current_app.config
        active = [
            job_status(run)
            for kind in ("backfill", "backfill_rollback")
            for run in operations.active_runs(db.session(), kind)
        ]
        return {
            "form": form,
            "report": report,
            "refusal": refusal,
            "start_form": start_form,
            "scope_args": form.as_args(),
            "active": active,
            "peak_window": config["BACKFILL_PEAK_WINDOW"],
            "in_peak_window": _in_peak_window(),
            "request_rate": current_request_rate(current_app._get_current_object()),
            "max_request_rate": config["BACKFILL_MAX_REQUEST_RATE"],
            "pause_seconds": config["BACKFILL_PAUSE_SECONDS"],
        }


# Reconciliation.


class ReconciliationView(SecureView):
    """Reconciliation history, one run's drift player by player, and checks on demand."""

    allowed_roles = OPERATIONS_ROLES

    @expose("/")
    def index(self):
        session = db.session()
        history = operations.reconciliation_history(
            session, before_id=_int_arg("before"), limit=HISTORY_PAGE_SIZE
        )
        return render_page_or_block(
            "admin/operations/reconciliation.html",
            "history",
            render=self.render,
            runs=history.runs,
            next_before=history.next_before,
            active=[job_status(run) for run in operations.active_runs(session, "reconcile")],
            form=ReconcileForm(),
        )

    @expose("/start", methods=("POST",))
    def start(self):
        form = ReconcileForm()
        if not form.validate_on_submit():
            flash("Nothing was started: choose to check, or to check and fix.", "danger")
            return redirect(url_for(".index"), 303)
        fix = form.mode.data == "fix"
        session = db.session()
        try:
            with unit_of_work(session):
                run_id = operations.queue_reconciliation(
                    session, current_actor(), fix=fix, batch_size=current_app.config["RECONCILE_FIX_BATCH_SIZE"]
                ).id
                _enqueue_after_commit(session, run_id)
        except DomainError as exc:
            flash(f"Nothing was started: {exc}.", "danger")
            return redirect(url_for(".index"), 303)
        what = "check and fix" if fix else "check (dry run)"
        flash(f"Reconciliation {what} queued as run {run_id}.", "success")
        return _run_page(run_id)

    @expose("/runs/<int:run_id>")
    def run(self, run_id: int):
        """A run and the drift it found; with htmx, only the next players' drift."""
        session = db.session()
        run = operations.reconciliation_run(session, run_id)
        after = _int_arg("after")
        drift = operations.drift_by_player(session, run_id, after_player_id=after, limit=DRIFT_PAGE_SIZE)
        return render_page_or_block(
            "admin/operations/reconciliation_run.html",
            "drift_page",
            render=self.render,
            run=run,
            drift=drift,
            continued=after is not None,
            drifted_stats=operations.drifted_stats(session, run_id),
        )

