"""A GDPR erasure in two browsers: one privacy staff member opens, verifies and asks; another approves.

Request → verify identity → request erasure → a second staff member, in a
browser context of their own, approves → the verification report on the page
shows zero hits and Bob's timeline shows Alice as "[deleted player]".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from webapp.domain.recording import NewEvent, record_events
from webapp.transaction import unit_of_work


@pytest.fixture
def league(live_server, session, make_player, tmp_path, monkeypatch):
    """Alice and Bob with a few matches between them; cold storage under tmp_path."""
    monkeypatch.setitem(live_server.app.config, "ARCHIVE_URL", str(tmp_path / "cold"))
    monkeypatch.setitem(live_server.app.config, "GDPR_EXPORT_URL", str(tmp_path / "exports"))
    alice = make_player("alice", display_name="Alice Liddell")
    bob = make_player("bob")
    at = datetime.now(UTC) - timedelta(days=3)
    facts = []
    for i in range(3):
        facts += [
            NewEvent(player_id=alice.id, event_type="match_won", occurred_at=at + timedelta(hours=i),
                     source_model="match", source_id=i + 1,
                     metadata={"round": f"R{i + 1}", "side": "a", "opponent_player_ids": [bob.id]}),
            NewEvent(player_id=bob.id, event_type="match_lost", occurred_at=at + timedelta(hours=i),
                     source_model="match", source_id=i + 1,
                     metadata={"round": f"R{i + 1}", "side": "b", "opponent_player_ids": [alice.id]}),
        ]
    with unit_of_work(session):
        record_events(session, facts)
    return alice, bob


def test_an_erasure_asked_by_one_and_approved_by_another_leaves_no_trace(
    browser, live_server, signed_in_page, make_staff, league, console_errors
):
    alice, bob = league
    page = signed_in_page("privacy")

    page.goto("/admin/gdpr/")
    page.get_by_label("Kind").select_option("erasure")
    page.get_by_label("Player public id").fill(alice.public_id)
    with page.expect_navigation():
        page.get_by_role("button", name="Open request").click()
    expect(page.get_by_test_id("request-status")).to_have_text("open")
    request_url = page.url

    page.get_by_label("How was the requester's identity verified?").fill(
        "Replied from the account's email address to our challenge")
    with page.expect_navigation():
        page.get_by_test_id("verify").click()
    expect(page.get_by_test_id("request-status")).to_have_text("verified")

    with page.expect_navigation():
        page.get_by_test_id("request-erasure").click()
    expect(page.get_by_test_id("request-status")).to_have_text("awaiting approval")
    expect(page.get_by_test_id("awaiting-second")).to_be_visible()
    expect(page.get_by_test_id("approve-erasure")).to_have_count(0)

    # The second staff member, in a browser context of their own.
    approver = make_staff("privacy")
    context = browser.new_context(base_url=live_server.url)
    try:
        other = context.new_page()
        other.goto("/auth/sign-in")
        other.get_by_label("Email").fill(approver.email)
        other.get_by_label("Password").fill("correct horse battery staple")
        with other.expect_navigation():
            other.get_by_role("button", name="Sign in").click()
        other.goto(request_url)
        with other.expect_navigation():
            other.get_by_test_id("approve-erasure").click()
        expect(other.get_by_test_id("request-status")).to_have_text("completed")
        expect(other.get_by_test_id("verification-report")).to_be_visible()
        expect(other.get_by_test_id("report-hits")).to_contain_text("0 hits")
        expect(other.get_by_test_id("request-player")).to_have_text("[deleted player]")
        other_kinds = other.get_by_test_id("timeline-entry").evaluate_all(
            "entries => entries.map(e => e.dataset.kind)")
        assert other_kinds[-2:] == ["erasure_approved", "completed"]
    finally:
        context.close()

    # The first staff member sees the same outcome, and Bob's history now names nobody.
    page.goto(request_url)
    expect(page.get_by_test_id("report-hits")).to_contain_text("0 hits")
    page.goto(f"/admin/players/{bob.public_id}")
    expect(page.get_by_text("[deleted player]").first).to_be_visible()
    assert alice.public_id not in page.content()
    assert console_errors == []
