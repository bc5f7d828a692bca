"""Staff sign-in and sign-out, the current actor, and role checks for plain views."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from webapp.domain import staff as staff_domain
from webapp.domain.audit import Actor, record_audit
from webapp.extensions import db, limiter, login_manager
from webapp.models.staff import ROLES, StaffUser
from webapp.transaction import unit_of_work

bp = Blueprint("auth", __name__, url_prefix="/auth")

ALL_ROLES = ROLES
SIGN_IN_FAILED = "Those credentials are not valid."


class SignInForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.sign_in"
    login_manager.login_message = "Please sign in to continue."
    login_manager.session_protection = "strong"
    app.register_blueprint(bp)


@login_manager.user_loader
def load_staff(staff_id: str) -> StaffUser | None:
    staff = db.session.get(StaffUser, int(staff_id))
    return staff if staff is not None and staff.active else None


def current_actor() -> Actor:
    """The signed-in staff member and their address, for the domain and the audit trail."""
    return Actor(staff_id=current_user.id if current_user.is_authenticated else None,
                 ip_address=request.remote_addr)


def roles_required(*roles: str):
    """Let only signed-in staff with one of ``roles`` through; others get 403."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not current_user.has_any_role(roles):
                abort(403)
            return view(*args, **kwargs)

        wrapped.allowed_roles = tuple(roles)
        return wrapped

    return decorator


def _safe_next(target: str | None) -> str:
    """Follow ``next`` only to a path on this site, never to another host."""
    default = url_for("admin.index")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def sign_in():
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = SignInForm()
    if form.validate_on_submit():
        staff = staff_domain.authenticate(db.session(), form.email.data, form.password.data)
        if staff is not None:
            with unit_of_work(db.session()):
                staff_domain.record_sign_in(db.session(), staff, request.remote_addr)
            session.clear()
            session.permanent = True  # expires after the idle timeout
            login_user(staff)
            return redirect(_safe_next(request.args.get("next")))
        flash(SIGN_IN_FAILED, "danger")
        return render_template("auth/sign_in.html", form=form), 401
    return render_template("auth/sign_in.html", form=form)


@bp.post("/sign-out")
@login_required
def sign_out():
    actor = current_actor()
    with unit_of_work(db.session()):
        record_audit(db.session(), actor, "staff.sign_out", target_type="staff", target_id=actor.staff_id)
    logout_user()
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.sign_in"))
