"""API tokens for the platform: list, create (the secret shown once) and revoke. Admins only.

A new token's secret is rendered in the response to the POST that created it,
with ``Cache-Control: no-store``, and nowhere else: never flashed (the session
cookie is signed, not encrypted), never put in a URL, never logged or audited.
"""

from __future__ import annotations

from flask import flash, redirect, url_for
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from webapp.domain.api_tokens import MAX_NAME_LENGTH, create_token, list_tokens, revoke_token
from webapp.extensions import db
from webapp.models.api_tokens import TOKEN_SCOPES
from webapp.transaction import unit_of_work
from webapp.web.admin.base import SecureView
from webapp.web.auth import current_actor

SCOPE_HELP = {
    "read": "player feeds and stats",
    "write": "report match and tournament results",
}


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=MAX_NAME_LENGTH)])
    scopes = SelectMultipleField(
        "Scopes",
        choices=list(TOKEN_SCOPES),
        default=["read"],
        validators=[DataRequired(message="Choose at least one scope.")],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
    )


class RevokeForm(FlaskForm):
    """Carries only the CSRF token."""


class ApiTokensView(SecureView):
    allowed_roles = ("admin",)

    def _page(self, form: TokenForm, *, created: dict | None = None, status: int = 200):
        page = self.render(
            "admin/api_tokens/index.html",
            form=form,
            tokens=list_tokens(db.session()),
            revoke_form=RevokeForm(),
            created=created,
            scope_help=SCOPE_HELP,
        )
        # The page may hold a secret that is shown once: no cache may keep it.
        return page, status, {"Cache-Control": "no-store"}

    @expose("/")
    def index(self):
        return self._page(TokenForm())

    @expose("/new", methods=["POST"])
    def create(self):
        form = TokenForm()
        if not form.validate_on_submit():
            return self._page(form, status=400)
        with unit_of_work(db.session()):
            new = create_token(db.session(), current_actor(), form.name.data, form.scopes.data)
            created = {
                "name": new.token.name,
                "prefix": new.token.prefix,
                "scopes": list(new.token.scopes),
                "plaintext": new.plaintext,
            }
        return self._page(TokenForm(formdata=None), created=created)

    @expose("/<int:token_id>/revoke", methods=["POST"])
    def revoke(self, token_id: int):
        form = RevokeForm()
        if not form.validate_on_submit():
            flash("The form expired; try again.", "danger")
            return redirect(url_for(".index"))
        with unit_of_work(db.session()):
            token = revoke_token(db.session(), current_actor(), token_id)
            name, prefix = token.name, token.prefix
        flash(
            f"Token “{name}” ({prefix}…) is revoked: the platform can no longer use it.", "success"
        )
        return redirect(url_for(".index"))
