"""Resolving a dispute in a real browser, and a colleague's stale page told the match changed."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ACTION_TIMEOUT_MS
from tests.conftest import STAFF_PASSWORD


@pytest.fixture
def disputed(make_disputed_match):
    match, _dispute, _alice, _bob = make_disputed_match("the score was entered the wrong way round")
    return match


def colleague_page(browser, live_server, make_staff):
    """Another trust and safety member, signed in in a browser context of their own."""
    staff = make_staff("trust_safety")
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    page.goto("/auth/sign-in")
    page.get_by_label("Email").fill(staff.email)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    return context, page


def test_staff_resolve_a_dispute_with_a_preview_and_a_stale_page_is_told_it_changed(
    browser, live_server, signed_in_page, make_staff, console_errors, disputed
):
    page = signed_in_page("trust_safety")
    context, colleague = colleague_page(browser, live_server, make_staff)
    try:
        # The colleague opens the same case first and leaves the page open.
        colleague.goto("/admin/disputes/")
        with colleague.expect_navigation():
            colleague.get_by_test_id("open-case").click()

        page.goto("/admin/disputes/")
        row = page.get_by_test_id("dispute-row")
        expect(row).to_contain_text("the score was entered the wrong way round")
        with page.expect_navigation():
            row.get_by_test_id("open-case").click()
        expect(page.get_by_test_id("side-a")).to_contain_text("Alice")
        expect(page.get_by_test_id("match-event")).to_have_count(2)

        page.get_by_label("Side B won").check()
        page.get_by_label("Reason").fill("The referee's sheet says bob won 3-1.")
        with page.expect_navigation():
            page.get_by_test_id("preview").click()
        expect(page.get_by_test_id("preview-intro")).to_be_visible()
        expect(page.get_by_test_id("preview-reversals")).to_contain_text("match_won_reversed")
        expect(page.get_by_test_id("preview-new-events")).to_contain_text("match_won")
        expect(page.get_by_test_id("preview-stat").first).to_be_visible()

        with page.expect_navigation():
            page.get_by_test_id("confirm").click()
        expect(page.get_by_test_id("case-status")).to_have_text("resolved")
        expect(page.get_by_test_id("resolution-events")).to_contain_text("match_won_reversed")
        expect(page.get_by_test_id("resolution-events")).to_contain_text("match_lost_reversed")
        expect(page.get_by_test_id("match-winner")).to_contain_text("side B")
        assert console_errors == []

        # The colleague's page still shows the open case: resolving from it is refused.
        colleague.get_by_label("Void the match").check()
        colleague.get_by_label("Reason").fill("Looks like match fixing.")
        with colleague.expect_navigation():
            colleague.get_by_test_id("preview").click()
        expect(colleague.get_by_test_id("changed-message")).to_contain_text("changed since you opened it")
        expect(colleague.get_by_test_id("match-winner")).to_contain_text("side B")
    finally:
        context.close()
