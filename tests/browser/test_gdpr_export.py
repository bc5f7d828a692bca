"""A GDPR export in a browser: started on a verified request, written by the queue, downloaded, then expired.

The live server runs a real queue consumer beside it, as a deployment's web
process does, so the export started from the page is written by a worker
while the panel polls.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import queue_consumer
from webapp.domain import gdpr_requests
from webapp.domain.audit import Actor
from webapp.domain.recording import NewEvent, record_events
from webapp.transaction import unit_of_work

# Long enough to download under load, short enough to wait out in a test.
LINK_SECONDS = 8
FINISH_TIMEOUT_MS = 60_000


@pytest.fixture
def workers(live_server, tmp_path, monkeypatch):
    """A queue consumer beside the live server, exports written under tmp_path with short links."""
    app = live_server.app
    monkeypatch.setitem(app.config, "GDPR_EXPORT_URL", str(tmp_path / "exports"))
    monkeypatch.setitem(app.config, "ARCHIVE_URL", str(tmp_path / "cold"))
    monkeypatch.setitem(app.config, "GDPR_EXPORT_LINK_MAX_AGE_SECONDS", LINK_SECONDS)
    with queue_consumer(app) as consumer:
        yield consumer


@pytest.fixture
def verified_request(session, make_staff, make_player) -> int:
    """Alice's export request, her identity verified, with a few matches against Bob."""
    alice, bob = make_player("alice"), make_player("bob")
    at = datetime.now(UTC) - timedelta(days=3)
    with unit_of_work(session):
        record_events(session, [
            NewEvent(player_id=alice.id, event_type=("match_won", "match_lost")[i % 2],
                     occurred_at=at + timedelta(hours=i), source_model="match", source_id=i + 1,
                     metadata={"round": f"R{i + 1}", "side": "a", "opponent_player_ids": [bob.id]})
            for i in range(5)
        ])
    actor = Actor(staff_id=make_staff("privacy").id)
    with unit_of_work(session):
        request = gdpr_requests.open_request(session, actor, "export", alice.public_id)
        gdpr_requests.record_identity_verification(session, actor, request.id,
                                                   "photo id checked on a video call")
        return request.id


def test_an_export_is_started_downloaded_and_its_link_then_expires(
    signed_in_page, console_errors, workers, verified_request
):
    page = signed_in_page("privacy")
    page.goto(f"/admin/gdpr/{verified_request}")

    page.get_by_test_id("start-export").click()
    expect(page.get_by_test_id("export-started")).to_be_visible()
    expect(page.get_by_test_id("export-status")).to_have_text("ready", timeout=FINISH_TIMEOUT_MS)
    ready_at = time.monotonic()

    json_link = page.get_by_test_id("download-json")
    href = json_link.get_attribute("href")
    with page.expect_download() as download:
        json_link.click()
    data = Path(download.value.path()).read_bytes()
    shown = page.get_by_test_id("json-sha256").inner_text()
    assert shown == f"sha256 {hashlib.sha256(data).hexdigest()}"
    document = json.loads(data)
    assert document["player"]["username"] == "alice"
    assert [e["details"]["round"] for e in document["events"]] == ["R1", "R2", "R3", "R4", "R5"]
    assert download.value.suggested_filename.endswith(".json")

    assert console_errors == []

    page.wait_for_timeout(max(0, (LINK_SECONDS + 1.5 - (time.monotonic() - ready_at)) * 1000))
    response = page.goto(href)

    assert response.status == 410
    expect(page.get_by_test_id("error")).to_contain_text("expired")
