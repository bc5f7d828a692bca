"""The dashboard shell in a real browser: signing in and out, access, and a clean console."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.conftest import STAFF_PASSWORD
from webapp.web.auth import SIGN_IN_FAILED


def where(page) -> str:
    """The page's path and query string, as a person reads the address bar."""
    url = urlsplit(page.url)
    return url.path + (f"?{url.query}" if url.query else "")


def test_staff_who_sign_in_see_the_dashboard_with_their_email(
    page, make_staff, sign_in_through_form
):
    staff = make_staff("viewer")

    sign_in_through_form(staff.email, STAFF_PASSWORD)

    assert where(page) == "/admin/"
    expect(page.get_by_test_id("signed-in-as")).to_contain_text(staff.email)
    expect(page.get_by_test_id("sign-out")).to_be_visible()


@pytest.mark.parametrize("wrong", ["password", "email"])
def test_a_failed_sign_in_shows_one_generic_error_and_stays_on_sign_in(
    page, make_staff, sign_in_through_form, wrong
):
    staff = make_staff("admin")
    email = "nobody@staff.test" if wrong == "email" else staff.email
    password = STAFF_PASSWORD if wrong == "email" else "not the password at all"

    sign_in_through_form(email, password)

    assert where(page) == "/auth/sign-in"
    expect(page.get_by_role("alert")).to_have_text(SIGN_IN_FAILED)
    expect(page.get_by_label("Password")).to_have_value("")
    page.goto("/admin/")
    assert urlsplit(page.url).path == "/auth/sign-in", (
        "a failed sign-in must not open the dashboard"
    )


def test_a_viewer_opening_an_admin_only_page_gets_the_403_page(signed_in_page):
    page = signed_in_page("viewer")

    response = page.goto("/admin/records_staff_users/")

    assert response.status == 403
    expect(page.get_by_test_id("error")).to_contain_text("403 Forbidden")
    expect(page.get_by_test_id("error")).to_contain_text(
        "You do not have a role that allows this page"
    )
    page.get_by_role("link", name="Back to the dashboard").click()
    expect(page.get_by_test_id("signed-in-as")).to_be_visible()
    assert where(page) == "/admin/"


@pytest.mark.parametrize("asked_for", ["/admin/", "/admin/records_audit_entries/?sort=0"])
def test_an_anonymous_visit_goes_through_sign_in_and_back_to_the_page_asked_for(
    page, make_staff, sign_in_through_form, asked_for
):
    staff = make_staff("privacy")

    page.goto(asked_for)
    assert urlsplit(page.url).path == "/auth/sign-in"
    expect(page.get_by_test_id("signed-in-as")).to_have_count(0)

    sign_in_through_form(staff.email)

    assert where(page) == asked_for
    expect(page.get_by_test_id("signed-in-as")).to_contain_text(staff.email)


def test_signing_out_returns_to_sign_in_and_the_dashboard_needs_signing_in_again(signed_in_page):
    page = signed_in_page("engineer")

    with page.expect_navigation():
        page.get_by_test_id("sign-out").click()

    assert where(page) == "/auth/sign-in"
    expect(page.get_by_role("alert")).to_have_text("You have signed out.")
    page.goto("/admin/")
    assert urlsplit(page.url).path == "/auth/sign-in"
    expect(page.get_by_test_id("signed-in-as")).to_have_count(0)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/records_players/",
        # Flask-Admin's filter menu carries onclick="return false;", allowed by its hash alone.
        "/admin/records_audit_entries/",
        "/admin/records_activity_events/",
    ],
)
def test_dashboard_pages_load_without_console_errors_or_csp_violations(
    signed_in_page, console_errors, path
):
    page = signed_in_page("admin")

    response = page.goto(path)

    assert response.status == 200
    expect(page.get_by_test_id("signed-in-as")).to_be_visible()
    assert console_errors == []


def test_the_content_security_policy_refuses_inline_script_and_the_page_reports_it(
    signed_in_page, console_errors
):
    page = signed_in_page("viewer")

    with page.expect_console_message(lambda message: message.type == "error") as reported:
        ran = page.evaluate(
            """() => new Promise(resolve => {
                document.addEventListener("securitypolicyviolation", () => resolve(false));
                const script = document.createElement("script");
                script.textContent = "window.inlineRan = true";
                document.body.appendChild(script);
                if (window.inlineRan === true) resolve(true);  // allowed: no violation will come
            })"""
        )
        assert ran is False, "the inline script ran: the policy no longer refuses it"

    assert "Content Security Policy" in reported.value.text
    assert len(console_errors) == 1 and reported.value.text in console_errors[0], (
        "the other tests' guard sees it"
    )


def test_htmx_is_loaded_from_our_own_static_files(signed_in_page):
    page = signed_in_page("viewer")

    version = page.evaluate("() => window.htmx && window.htmx.version")

    assert isinstance(version, str) and version, "window.htmx is not defined on the dashboard"
    script_sources = page.locator("script[src]").evaluate_all("scripts => scripts.map(s => s.src)")
    assert any(urlsplit(src).path == "/static/vendor/htmx.min.js" for src in script_sources), (
        script_sources
    )
