"""Every dashboard view x every role: allowed roles get the page, others 403, anonymous users sign in.

The matrix is read from the views themselves (``allowed_roles``), so a new view
is covered as soon as it exists, and a view that forgets to declare its roles
fails here.
"""

from __future__ import annotations

import pytest
from flask import url_for

from tests.conftest import csrf_token_from
from webapp.models.staff import ROLES
from webapp.web.admin.base import RoleProtected

ANONYMOUS = "anonymous"


def dashboard_pages(app) -> list[tuple[str, tuple[str, ...]]]:
    """(url, allowed roles) of every dashboard page and role-protected view without URL arguments."""
    pages = []
    with app.test_request_context():
        for admin in app.extensions["admin"]:
            for view in admin._views:
                assert isinstance(view, RoleProtected), f"{view!r} does not declare its roles"
                assert view.allowed_roles, f"{view!r} allows no role at all"
                endpoint = f"{view.endpoint}.index_view" if f"{view.endpoint}.index_view" in app.view_functions \
                    else f"{view.endpoint}.index"
                pages.append((url_for(endpoint), tuple(view.allowed_roles)))
        for rule in app.url_map.iter_rules():
            view = app.view_functions[rule.endpoint]
            roles = getattr(view, "allowed_roles", None)
            if roles and not rule.arguments and "GET" in rule.methods:
                pages.append((url_for(rule.endpoint), tuple(roles)))
    return pages


def test_every_view_declares_roles(app):
    pages = dashboard_pages(app)
    assert len(pages) >= 12
    for url, roles in pages:
        assert set(roles) <= set(ROLES), url


@pytest.mark.parametrize("role", [*ROLES, ANONYMOUS])
def test_each_role_reaches_exactly_the_views_it_is_allowed(app, client, sign_in, role):
    if role != ANONYMOUS:
        sign_in(role)
    failures = []
    for url, allowed in dashboard_pages(app):
        response = client.get(url)
        if role == ANONYMOUS:
            expected = 302
        else:
            expected = 200 if role in allowed else 403
        if response.status_code != expected:
            failures.append(f"{url}: {response.status_code}, expected {expected}")
        if expected == 302:
            assert "/auth/sign-in" in response.headers["Location"]
        if expected == 403:
            assert 'data-testid="error"' in response.text
    assert not failures, "\n".join(failures)


def test_record_views_offer_no_create_edit_or_delete(app, client, sign_in):
    sign_in("admin")
    for url, _roles in dashboard_pages(app):
        if "/records_" not in url:
            continue
        for action in ("new/", "edit/?id=1"):
            response = client.get(url + action)
            assert response.status_code in (302, 403, 404), f"{url}{action} -> {response.status_code}"
        html = client.get(url).text
        assert "Delete" not in html and "/delete/" not in html, url


GDPR_ROLES = ("privacy", "admin")
# Every GDPR request route that takes the request's id, and its method.
GDPR_REQUEST_ROUTES = (
    ("GET", ""),
    ("POST", "/verify"),
    ("POST", "/notes"),
    ("POST", "/refuse"),
    ("POST", "/erasure/request"),
    ("POST", "/erasure/approve"),
)


def assert_only_allowed_roles_act(response, method, url, role, allowed, *, rejected):
    """Anonymous visitors are sent to sign in, other roles refused; an allowed role is served
    a page (GET) or has its empty form rejected with one of the ``rejected`` codes."""
    if role == ANONYMOUS:
        assert response.status_code == 302 and "/auth/sign-in" in response.headers["Location"], url
    elif role not in allowed:
        assert response.status_code == 403, url
    elif method == "GET":
        assert response.status_code == 200, url
    else:
        assert response.status_code in rejected, url


@pytest.mark.parametrize("role", [*ROLES, ANONYMOUS])
def test_gdpr_request_pages_and_actions_are_for_privacy_and_admin_only(
    client, sign_in, session, make_staff, make_player, role
):
    from webapp.domain.audit import Actor
    from webapp.domain.gdpr_requests import get_request, open_request
    from webapp.transaction import unit_of_work

    actor, player = Actor(staff_id=make_staff("privacy").id), make_player()
    with unit_of_work(session):
        request_id = open_request(session, actor, "erasure", player.public_id).id
    if role != ANONYMOUS:
        sign_in(role)
    # A valid CSRF token, so that what answers is the role check, not CSRF protection.
    token = csrf_token_from(client.get("/auth/sign-in" if role == ANONYMOUS else "/admin/").text)
    for method, suffix in GDPR_REQUEST_ROUTES:
        url = f"/admin/gdpr/{request_id}{suffix}"
        # Empty fields: an allowed role is refused by validation, so nothing changes either way.
        response = client.open(url, method=method, data={"csrf_token": token, "how": "", "text": "",
                                                         "reason": ""})
        assert_only_allowed_roles_act(response, method, url, role, GDPR_ROLES, rejected=(400, 409))
    session.rollback()
    assert get_request(session, request_id).status == "open"


DISPUTE_ROLES = ("admin", "trust_safety")


@pytest.mark.parametrize("role", [*ROLES, ANONYMOUS])
def test_dispute_pages_and_actions_are_for_trust_and_safety_and_admin_only(
    client, sign_in, session, make_player, make_tournament, make_match, role
):
    from sqlalchemy import func, select

    from webapp.domain.audit import Actor
    from webapp.domain.disputes import report_dispute
    from webapp.models import DisputeNote, MatchResolution
    from webapp.transaction import unit_of_work

    match = make_match(make_tournament(), make_player(), make_player())
    with unit_of_work(session):
        case_id = report_dispute(session, Actor(None), match.id, "wrong winner").dispute.id
    if role != ANONYMOUS:
        sign_in(role)
    token = csrf_token_from(client.get("/auth/sign-in" if role == ANONYMOUS else "/admin/").text)
    routes = [("GET", f"/admin/disputes/matches/{match.id}"), ("POST", f"/admin/disputes/matches/{match.id}/report"),
              ("GET", f"/admin/disputes/cases/{case_id}"), ("POST", f"/admin/disputes/cases/{case_id}/notes"),
              ("POST", f"/admin/disputes/cases/{case_id}/preview"), ("POST", f"/admin/disputes/cases/{case_id}/resolve")]
    for method, url in routes:
        # Empty fields: an allowed role is refused by validation, so nothing changes either way.
        response = client.open(url, method=method, data={"csrf_token": token, "reason": "", "body": ""})
        assert_only_allowed_roles_act(response, method, url, role, DISPUTE_ROLES, rejected=(302, 400))
    session.rollback()
    assert session.scalar(select(func.count()).select_from(MatchResolution)) == 0
    assert session.scalar(select(func.count()).select_from(DisputeNote)) == 0
