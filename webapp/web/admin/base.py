"""One place for the dashboard's access rules: every view names the roles it allows."""

from __future__ import annotations

from flask import abort, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView
from flask_admin.contrib.sqla import ModelView
from flask_admin.form import SecureForm
from flask_login import current_user

from webapp.models.staff import ROLES

ALL_ROLES = ROLES
# Roles that may see a player's unredacted data, after giving a reason.
UNREDACTED_ROLES = ("admin", "trust_safety", "privacy")


class RoleProtected:
    """Mixin for Flask-Admin views: anonymous users go to sign-in, other roles get 403."""

    allowed_roles: tuple[str, ...] = ()

    def is_accessible(self) -> bool:
        return current_user.is_authenticated and current_user.has_any_role(self.allowed_roles)

    def is_visible(self) -> bool:
        return self.is_accessible()

    def inaccessible_callback(self, name, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.sign_in", next=request.full_path.rstrip("?")))
        abort(403)


class SecureView(RoleProtected, BaseView):
    """A custom dashboard page."""


class SecureIndexView(RoleProtected, AdminIndexView):
    allowed_roles = ALL_ROLES


class ReadOnlyModelView(RoleProtected, ModelView):
    """Browse records; nothing can be created, edited or deleted from the dashboard."""

    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    can_export = False
    column_display_pk = True
    page_size = 50
    # Large tables must not pay for COUNT(*) on every page.
    simple_list_pager = True
    form_base_class = SecureForm
    action_disallowed_list = ["delete"]
