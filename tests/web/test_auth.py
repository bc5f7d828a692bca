"""Staff sign-in: credentials, sessions, CSRF, rate limits, safe redirects, headers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.conftest import STAFF_PASSWORD, csrf_token_from
from webapp.models import AuditEntry, StaffUser


def post_sign_in(client, email, password, next_url=None):
    page = client.get("/auth/sign-in")
    url = "/auth/sign-in" + (f"?next={next_url}" if next_url else "")
    return client.post(url, data={"email": email, "password": password, "csrf_token": csrf_token_from(page.text)})


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/auth/sign-in" in response.headers["Location"]


def test_staff_sign_in_with_the_right_password_and_land_on_the_dashboard(client, make_staff, session):
    staff = make_staff("viewer")
    response = post_sign_in(client, staff.email, STAFF_PASSWORD)
    assert response.status_code == 302
    page = client.get("/admin/")
    assert page.status_code == 200
    assert staff.email in page.text
    session.rollback()  # end the test's read transaction to see what the requests committed
    assert session.get(StaffUser, staff.id).last_sign_in_at is not None
    actions = session.scalars(select(AuditEntry.action).where(AuditEntry.staff_id == staff.id)).all()
    assert "staff.sign_in" in actions


@pytest.mark.parametrize("wrong", ["email", "password"])
def test_a_failed_sign_in_does_not_say_which_part_was_wrong(client, make_staff, wrong):
    staff = make_staff("viewer")
    email = "nobody@staff.test" if wrong == "email" else staff.email
    password = STAFF_PASSWORD if wrong == "email" else "not the password at all"
    response = post_sign_in(client, email, password)
    assert response.status_code == 401
    assert "Those credentials are not valid." in response.text
    assert "password" not in response.text.split("Those credentials")[1][:60].lower()
    assert client.get("/admin/").status_code == 302


def test_a_deactivated_account_cannot_sign_in_and_its_session_ends(client, make_staff, runner):
    staff = make_staff("viewer")
    assert post_sign_in(client, staff.email, STAFF_PASSWORD).status_code == 302
    result = runner.invoke(args=["staff", "deactivate", staff.email])
    assert result.exit_code == 0, result.output
    assert client.get("/admin/").status_code == 302, "the open session no longer works"
    assert post_sign_in(client, staff.email, STAFF_PASSWORD).status_code == 401


def test_sign_in_without_a_csrf_token_is_refused(client, make_staff):
    staff = make_staff("viewer")
    response = client.post("/auth/sign-in", data={"email": staff.email, "password": STAFF_PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_sign_out_needs_post_with_csrf_and_ends_the_session(client, sign_in):
    sign_in("viewer")
    assert client.get("/auth/sign-out").status_code == 405
    assert client.post("/auth/sign-out").status_code == 400, "no CSRF token"
    page = client.get("/admin/")
    response = client.post("/auth/sign-out", data={"csrf_token": csrf_token_from(page.text)})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 302


def test_repeated_failed_sign_ins_are_rate_limited(client, make_staff, app):
    staff = make_staff("viewer")
    statuses = [post_sign_in(client, staff.email, "wrong password here").status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_sign_in_never_redirects_to_another_site(client, make_staff, target):
    staff = make_staff("viewer")
    response = post_sign_in(client, staff.email, STAFF_PASSWORD, next_url=target)
    assert response.headers["Location"].endswith("/admin/")


def test_sign_in_returns_to_the_page_that_asked_for_it(client, make_staff):
    staff = make_staff("admin")
    response = post_sign_in(client, staff.email, STAFF_PASSWORD, next_url="/admin/records_players/")
    assert response.headers["Location"] == "/admin/records_players/"


def test_session_cookie_is_httponly_and_samesite_lax(client, make_staff):
    staff = make_staff("viewer")
    response = post_sign_in(client, staff.email, STAFF_PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_every_response_carries_the_security_headers(client):
    response = client.get("/auth/sign-in")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert "http" not in csp, "no third-party origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers
    secure = client.get("/auth/sign-in", base_url="https://localhost")
    assert "max-age" in secure.headers["Strict-Transport-Security"]


def test_pages_contain_no_inline_script(client, sign_in):
    import re

    sign_in("admin")
    for url in ("/auth/sign-in", "/admin/", "/admin/records_players/"):
        html = client.get(url).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
