"""The monitoring overview in a real browser: plotly draws the charts, and the range switches in place."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect

from tests.domain.test_recording import won
from webapp.domain import monitoring
from webapp.domain.recording import record_events
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work


def test_the_overview_draws_its_charts_and_switches_range_without_a_reload(
    signed_in_page, console_errors, session, make_player
):
    alice = make_player("alice")
    with unit_of_work(session):
        record_events(session, [won(alice, source_id=n) for n in range(1, 4)])
    with unit_of_work(session):
        monitoring.fold_event_volume(session, now=utcnow() + timedelta(hours=1))
    page = signed_in_page("engineer")

    with page.expect_navigation():
        page.get_by_test_id("monitoring-link").click()

    volume = page.locator('[data-chart="volume"]')
    expect(volume.locator(".main-svg").first).to_be_attached()
    for name in ("drift", "reconciliation", "latency", "backfill", "size"):
        expect(page.locator(f'[data-chart="{name}"] .main-svg').first).to_be_attached()
    expect(volume.get_by_test_id("chart-table")).to_contain_text("match_won")
    # A marker on the window survives an htmx swap and is lost on a full reload.
    page.evaluate("window.stillTheSamePage = true")

    page.locator('[data-range="30d"]').click()

    expect(page.get_by_test_id("monitoring-charts")).to_have_attribute("data-range", "30d")
    expect(page.get_by_test_id("range-label")).to_contain_text("Last 30 days, by day")
    expect(page.locator('[data-chart="volume"] .main-svg').first).to_be_attached()
    expect(page.locator('[data-chart="volume"]').get_by_test_id("chart-table")).to_contain_text("3")
    assert page.url.endswith("/admin/monitoring/?range=30d")
    assert page.evaluate("window.stillTheSamePage") is True

    # A chart's own refresh (every minute) swaps in a new section that is drawn again.
    page.evaluate("document.querySelector('#chart-volume .main-svg').classList.add('before-refresh')")
    with page.expect_response(lambda r: "/admin/monitoring/chart/volume?range=30d" in r.url):
        page.evaluate("""htmx.ajax('GET', document.querySelector('#chart-volume').getAttribute('hx-get'),
                                   {target: '#chart-volume', swap: 'outerHTML'})""")
    expect(page.locator("#chart-volume .main-svg").first).to_be_attached()
    expect(page.locator("#chart-volume .before-refresh")).to_have_count(0)
    assert page.evaluate("window.stillTheSamePage") is True
    assert console_errors == []


def test_a_viewer_sees_volume_and_drift_but_not_the_engineering_charts(signed_in_page, console_errors):
    page = signed_in_page("viewer")

    page.goto("/admin/monitoring/?range=90d")

    expect(page.locator('[data-chart="volume"] .main-svg').first).to_be_attached()
    expect(page.locator('[data-chart="drift"] .main-svg').first).to_be_attached()
    expect(page.locator('[data-chart="latency"]')).to_have_count(0)
    expect(page.locator('[data-chart="size"]')).to_have_count(0)
    assert console_errors == []
