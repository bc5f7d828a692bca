"""Player pages in a browser: search, htmx paging and filters, redaction, reveal for a reason."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.conftest import T0
from webapp.domain.recording import NewEvent, record_events
from webapp.transaction import unit_of_work


@pytest.fixture
def alice(session, make_player, make_tournament):
    """Alice with 60 events: matches against Bob, some in a private tournament, some backfilled."""
    alice = make_player("alice", display_name="Alice Liddell", email="alice.l@example.test")
    bob = make_player("bobthebuilder", display_name="Robert Opponent")
    secret = make_tournament("Secret Invitational", is_private=True)
    with unit_of_work(session):
        record_events(
            session,
            [
                NewEvent(
                    player_id=alice.id,
                    event_type=("match_won", "match_lost")[n % 2],
                    occurred_at=T0 + timedelta(hours=n),
                    source_model="match",
                    source_id=n,
                    origin=("live", "backfill")[n % 5 == 0],
                    origin_id=4 if n % 5 == 0 else None,
                    tournament_id=secret.id if n >= 55 else None,
                    metadata={"round": f"R{n}", "side": "a", "opponent_player_ids": [bob.id]},
                )
                for n in range(60)
            ],
        )
    return alice


def remember_this_document(page) -> None:
    """Mark the loaded document; a full reload loses the mark, an htmx swap keeps it."""
    page.evaluate("() => { window.sameDocument = true; }")


def still_the_same_document(page) -> bool:
    return page.evaluate("() => window.sameDocument === true")


def test_search_then_open_a_player_and_load_more_events_in_place(
    signed_in_page, console_errors, alice
):
    page = signed_in_page("viewer")
    page.goto("/admin/players/")
    remember_this_document(page)

    page.get_by_label("Search players").fill("alice l")
    page.get_by_role("button", name="Search").click()

    result = page.get_by_test_id("search-result")
    expect(result).to_have_count(1)
    expect(result).to_contain_text("Alice Liddell")
    assert still_the_same_document(page), "htmx swapped the results in"
    assert parse_qs(urlsplit(page.url).query)["q"] == ["alice l"], (
        "the search is in the address bar"
    )

    # A full navigation: wait for its load event, so htmx has wired up the new page
    # before its "Load more" link is clicked.
    with page.expect_navigation():
        result.get_by_role("link", name=alice.public_id).click()
    expect(page.get_by_test_id("player-heading")).to_contain_text(alice.public_id)
    events = page.get_by_test_id("event")
    expect(events).to_have_count(25)
    remember_this_document(page)

    page.get_by_test_id("load-more").click()
    expect(events).to_have_count(50)
    page.get_by_test_id("load-more").click()
    expect(events).to_have_count(60)

    expect(page.get_by_test_id("load-more")).to_have_count(0)
    expect(page.get_by_test_id("timeline-end")).to_be_visible()
    assert still_the_same_document(page), "rows were appended without a full reload"
    ids = events.evaluate_all("rows => rows.map(r => Number(r.dataset.eventId))")
    assert len(set(ids)) == 60
    assert console_errors == []


def test_filters_swap_the_timeline_and_keep_the_filter_in_the_address(
    signed_in_page, console_errors, alice
):
    page = signed_in_page("engineer")
    page.goto(f"/admin/players/{alice.public_id}")
    remember_this_document(page)

    page.get_by_label("Event types").select_option("match_won")
    page.get_by_label("backfill").check()
    page.get_by_test_id("apply-filters").click()

    events = page.get_by_test_id("event")
    # Won (odd n is lost) and backfilled (n % 5 == 0): n = 0, 10, 20, 30, 40, 50.
    expect(events).to_have_count(6)
    for kind in events.evaluate_all("rows => rows.map(r => r.dataset.eventType)"):
        assert kind == "match_won"
    expect(page.get_by_test_id("event-origin").first).to_contain_text("backfill run #4")
    assert still_the_same_document(page)
    query = parse_qs(urlsplit(page.url).query)
    assert query["type"] == ["match_won"] and query["origin"] == ["backfill"]

    page.reload()
    expect(events).to_have_count(6)
    expect(page.get_by_label("backfill")).to_be_checked()
    assert console_errors == []


def test_a_viewer_sees_the_redacted_page(signed_in_page, console_errors, alice):
    page = signed_in_page("viewer")
    page.goto(f"/admin/players/{alice.public_id}")

    expect(page.get_by_test_id("redacted-notice")).to_be_visible()
    expect(page.get_by_test_id("reveal-form")).to_have_count(0)
    expect(page.get_by_test_id("player-redacted")).to_have_text("hidden")
    text = page.locator("body").inner_text()
    assert "alice.l@example.test" not in text
    assert "bobthebuilder" not in text and "Robert Opponent" not in text
    assert "Secret Invitational" not in text and "[Private Tournament]" in text
    assert console_errors == []


def test_a_reason_reveals_the_full_data(signed_in_page, console_errors, alice):
    page = signed_in_page("trust_safety")
    page.goto(f"/admin/players/{alice.public_id}")
    expect(page.get_by_test_id("player-email")).to_have_count(0)

    page.get_by_label(re.compile("Reason for seeing")).fill("dispute #12")
    with page.expect_navigation():
        page.get_by_role("button", name="Show full data").click()

    expect(page.get_by_test_id("full-view-notice")).to_contain_text("dispute #12")
    expect(page.get_by_test_id("player-email")).to_have_text("alice.l@example.test")
    expect(page.get_by_test_id("event-opponents").first).to_contain_text("@bobthebuilder")
    expect(page.get_by_text("Secret Invitational").first).to_be_visible()
    page.get_by_test_id("load-more").click()
    expect(page.get_by_test_id("event")).to_have_count(50)
    assert console_errors == []
