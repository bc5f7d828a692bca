"""Operations in a browser: a dry run, then a backfill started from the dashboard and watched to 100 %.

The live server runs a real queue consumer beside it, as a deployment's web
process does, so a run started from the page is picked up and executed while
the page's progress bar polls.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from tests.browser.conftest import queue_consumer
from webapp.domain import backfill
from webapp.domain.backfill import BackfillScope
from webapp.models import ActivityEvent, JobRun

# Long enough that the bar is seen between 0 and 100, short enough for a quick test.
PAUSE_SECONDS = 0.4
FINISH_TIMEOUT_S = 60


@pytest.fixture
def workers(live_server, monkeypatch):
    """A queue consumer beside the live server; backfills may start at any hour and pause between batches."""
    app = live_server.app
    monkeypatch.setitem(app.config, "BACKFILL_PEAK_WINDOW", "off")
    monkeypatch.setitem(app.config, "BACKFILL_PAUSE_SECONDS", PAUSE_SECONDS)
    # The browser's own requests (assets, polling) must not trip the request-rate safeguard here.
    monkeypatch.setitem(app.config, "BACKFILL_MAX_REQUEST_RATE", 1_000_000.0)
    with queue_consumer(app) as consumer:
        yield consumer


@pytest.fixture
def history(make_player, make_tournament, make_registration, make_match, make_result):
    """A finished tournament never recorded as events: 10 source records."""
    players = [make_player(name) for name in ("alice", "bob", "carol", "dave")]
    cup = make_tournament("Autumn Open")
    for player in players:
        make_registration(cup, player)
    alice, bob, carol, dave = players
    for a, b, round_ in ((alice, bob, "SF1"), (carol, dave, "SF2"), (alice, carol, "F"),
                         (bob, dave, "3rd"), (dave, bob, "Exhibition")):
        make_match(cup, a, b, round=round_)
    make_result(cup, alice)
    return players


def remember_this_document(page) -> None:
    """Mark the loaded document; a full reload loses the mark, an htmx swap keeps it."""
    page.evaluate("() => { window.sameDocument = true; }")


def still_the_same_document(page) -> bool:
    return page.evaluate("() => window.sameDocument === true")


READ_PROGRESS = """() => {
    const progress = document.querySelector('[data-testid="job-progress"]');
    const bar = progress && progress.querySelector('[data-testid="job-progress-bar"]');
    return [bar ? bar.getAttribute("aria-valuenow") : null, progress ? progress.dataset.status : null];
}"""


def watch_until_finished(page, timeout_s: float = FINISH_TIMEOUT_S) -> list[int]:
    """Read the progress bar every 100 ms until its run has ended; return the values seen in order."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # Bar and status are read in one evaluation: read one at a time, an htmx swap
        # between the two reads could pair an ended status with the bar before it.
        value, status = page.evaluate(READ_PROGRESS)
        if value is not None and (not seen or seen[-1] != int(value)):
            seen.append(int(value))
        if status in ("succeeded", "failed", "cancelled"):
            return seen
        page.wait_for_timeout(100)
    raise AssertionError(f"the run did not end within {timeout_s}s; the bar showed {seen}")


def test_a_dry_run_then_a_backfill_from_the_dashboard_reaches_100_percent(
    signed_in_page, console_errors, session, workers, history
):
    expected = backfill.preview(session, BackfillScope(), batch_size=1)
    session.rollback()
    events = expected.events_to_create
    assert events > 0

    page = signed_in_page("engineer")
    page.goto("/admin/operations/backfill/")
    remember_this_document(page)
    page.get_by_label("Batch size").fill("1")
    page.get_by_role("button", name="Dry run").click()

    expect(page.get_by_test_id("events-to-create")).to_have_text(f"{events:,}")
    expect(page.get_by_test_id("source-records")).to_have_text("10")
    expect(page.get_by_test_id("players-affected")).to_have_text(str(expected.players_affected))
    expect(page.get_by_test_id("sample-event")).to_have_count(min(10, events))
    expect(page.get_by_test_id("nothing-written")).to_be_visible()
    assert still_the_same_document(page), "htmx swapped the report in"
    assert "preview=1" in page.url and "batch_size=1" in page.url, "the dry run is in the address bar"
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == 0
    assert session.scalar(select(func.count()).select_from(JobRun)) == 0
    session.rollback()

    page.get_by_label(re.compile("Type the number of events")).fill(str(events))
    with page.expect_navigation():
        page.get_by_role("button", name="Start backfill").click()
    expect(page.get_by_test_id("job-run-page")).to_be_visible()
    remember_this_document(page)

    seen = watch_until_finished(page)
    assert seen[0] < 100, f"the page opened before the run ended: {seen}"
    assert seen[-1] == 100
    assert any(0 < value < 100 for value in seen), f"the bar moved while the run went on: {seen}"
    assert seen == sorted(seen), "progress never goes back"
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded")
    assert still_the_same_document(page), "the bar polled in place; the page never reloaded"

    # The progress response that saw the run end told the page, and it fetched its outcome at once.
    expect(page.get_by_test_id("parity")).to_have_attribute("data-ok", "true")
    expect(page.get_by_test_id("ledger-line")).to_have_count(10)
    expect(page.get_by_test_id("events-created")).to_have_text(f"{events:,}")
    expect(page.get_by_test_id("rollback-form")).to_be_visible()
    assert session.scalar(select(func.count()).select_from(ActivityEvent)) == events
    session.rollback()
    assert console_errors == []


def test_a_check_and_fix_from_the_dashboard_runs_to_its_end(signed_in_page, console_errors, workers, history):
    page = signed_in_page("admin")
    page.goto("/admin/operations/reconciliation/")
    with page.expect_navigation():
        page.get_by_role("button", name="Check and fix").click()
    expect(page.get_by_test_id("job-run-page")).to_be_visible()
    remember_this_document(page)

    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=FINISH_TIMEOUT_S * 1000)
    expect(page.get_by_test_id("job-progress-bar")).to_have_attribute("aria-valuenow", "100")
    assert still_the_same_document(page)
    page.get_by_test_id("reconciliation-run-link").click()
    expect(page.get_by_test_id("reconciliation-run-page")).to_be_visible()
    expect(page.get_by_test_id("no-drift")).to_be_visible()
    assert console_errors == []
