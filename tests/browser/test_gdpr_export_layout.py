"""A finished GDPR export's row fits its panel: the files' sha256 digests wrap instead of widening it."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_gdpr_export import (  # noqa: F401 - fixtures
    FINISH_TIMEOUT_MS,
    verified_request,
    workers,
)


def test_a_ready_export_row_stays_inside_its_panel(signed_in_page, console_errors, workers,  # noqa: F811
                                                   verified_request):  # noqa: F811
    page = signed_in_page("privacy")
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"/admin/gdpr/{verified_request}")

    page.get_by_test_id("start-export").click()
    expect(page.get_by_test_id("export-status")).to_have_text("ready", timeout=FINISH_TIMEOUT_MS)

    panel = page.get_by_test_id("download-json").locator("xpath=ancestor::div[contains(@class, 'card')][1]")
    panel_box = panel.bounding_box()
    for test_id in ("json-sha256", "csv-sha256", "export-downloads"):
        box = page.get_by_test_id(test_id).first.bounding_box()
        assert box["x"] + box["width"] <= panel_box["x"] + panel_box["width"] + 0.5, test_id
    assert console_errors == []
