"""GDPR export screens: the request's export panel, starting an export, signed download links."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select, update

from tests.conftest import csrf_token_from
from webapp.domain import gdpr_requests
from webapp.domain.audit import Actor
from webapp.jobs.runner import execute_run
from webapp.models import AuditEntry, GdprExport, GdprExportDownload, JobRun
from webapp.models.base import utcnow
from webapp.models.staff import ROLES
from webapp.transaction import unit_of_work
from webapp.web.admin.gdpr_exports import LINK_SALT

pytestmark = pytest.mark.usefixtures("storage_in_tmp_path")

EXPORT_ROLES = ("privacy", "admin")


@pytest.fixture
def verified_request(session, make_staff, make_player) -> int:
    actor = Actor(staff_id=make_staff("privacy").id)
    player = make_player("alice")
    with unit_of_work(session):
        request = gdpr_requests.open_request(session, actor, "export", player.public_id)
        gdpr_requests.record_identity_verification(session, actor, request.id, "id card")
        return request.id


def panel_url(request_id: int) -> str:
    return f"/admin/gdpr-exports/requests/{request_id}/panel"


def start_export(client, request_id: int):
    token = csrf_token_from(client.get(panel_url(request_id)).text)
    return client.post(f"/admin/gdpr-exports/requests/{request_id}/start",
                       data={"csrf_token": token}, headers={"HX-Request": "true"})


def count(session, model, *where) -> int:
    n = session.scalar(select(func.count()).select_from(model).where(*where))
    session.rollback()
    return n


def links(html: str) -> dict[str, str]:
    found = re.findall(r'href="([^"]+)" data-testid="download-(json|csv|manifest)"', html)
    return {kind: href for href, kind in found}


@pytest.fixture
def ready_export(session, client, sign_in, verified_request) -> GdprExport:
    """Signed in as privacy staff, with the request's export written by its job."""
    sign_in("privacy")
    assert start_export(client, verified_request).status_code == 200
    session.rollback()  # a fresh snapshot, taken after the request committed
    export = session.scalars(select(GdprExport)).one()
    assert execute_run(session, export.job_run_id).status == "succeeded"
    session.refresh(export)
    # Detached: reading its fields later must not open a snapshot older than the test's requests.
    session.expunge(export)
    session.rollback()
    return export


@pytest.mark.parametrize("role", ROLES)
def test_only_privacy_staff_and_admins_see_the_export_panel(client, sign_in, verified_request, role):
    sign_in(role)

    response = client.get(panel_url(verified_request))

    assert response.status_code == (200 if role in EXPORT_ROLES else 403)
    if role in EXPORT_ROLES:
        assert 'data-testid="start-export"' in response.text


def test_anonymous_visitors_are_sent_to_sign_in(client, verified_request):
    response = client.get(panel_url(verified_request))

    assert response.status_code == 302 and "/auth/sign-in" in response.headers["Location"]


def test_starting_an_export_needs_the_csrf_token(session, client, sign_in, verified_request):
    sign_in("privacy")

    response = client.post(f"/admin/gdpr-exports/requests/{verified_request}/start")

    assert response.status_code == 400
    assert count(session, GdprExport) == 0 and count(session, JobRun) == 0


@pytest.mark.parametrize("role", ("viewer", "trust_safety", "engineer"))
def test_other_roles_cannot_start_an_export(session, client, sign_in, make_staff, verified_request,
                                            role):
    sign_in(role)
    # A token from a page this role may see: the form's token is the session's.
    token = csrf_token_from(client.get("/admin/").text)

    response = client.post(f"/admin/gdpr-exports/requests/{verified_request}/start",
                           data={"csrf_token": token})

    assert response.status_code == 403
    assert count(session, GdprExport) == 0


def test_an_unverified_request_offers_no_export_and_refuses_one(session, client, sign_in,
                                                                make_staff, make_player):
    actor = Actor(staff_id=make_staff("privacy").id)
    bob = make_player("bob")
    with unit_of_work(session):
        request_id = gdpr_requests.open_request(session, actor, "export", bob.public_id).id
    sign_in("privacy")

    page = client.get(panel_url(request_id))
    assert 'data-testid="export-needs-verification"' in page.text
    assert 'data-testid="start-export"' not in page.text
    response = client.post(f"/admin/gdpr-exports/requests/{request_id}/start",
                           data={"csrf_token": csrf_token_from(client.get("/admin/").text)},
                           headers={"HX-Request": "true"})

    assert 'data-testid="export-refusal"' in response.text
    assert "identity has not been verified" in response.text
    assert count(session, GdprExport) == 0


def test_a_started_export_polls_until_its_run_ends_then_offers_signed_links(
    session, client, sign_in, verified_request
):
    sign_in("admin")

    started = start_export(client, verified_request)
    assert 'data-testid="export-started"' in started.text
    assert 'hx-trigger="every 1s"' in started.text, "the panel follows the queued run"
    assert links(started.text) == {}
    session.rollback()  # a fresh snapshot, taken after the request committed
    export = session.scalars(select(GdprExport)).one()
    session.rollback()
    assert count(session, AuditEntry, AuditEntry.action == "gdpr.export.start") == 1

    execute_run(session, export.job_run_id)
    session.rollback()
    panel = client.get(panel_url(verified_request)).text

    assert 'hx-trigger="every 1s"' not in panel
    assert set(links(panel)) == {"json", "csv", "manifest"}
    assert 'data-testid="export-status">ready' in panel


def test_each_file_downloads_through_its_link_and_every_download_is_audited(
    session, client, ready_export
):
    hrefs = links(client.get(panel_url(ready_export.request_id)).text)

    for file, sha256 in (("json", ready_export.json_sha256), ("csv", ready_export.csv_sha256)):
        response = client.get(hrefs[file])
        assert response.status_code == 200
        assert hashlib.sha256(response.data).hexdigest() == sha256
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get(hrefs["json"]).status_code == 200  # again: a second download, recorded too

    downloads = session.scalars(select(GdprExportDownload.file).order_by(GdprExportDownload.id)).all()
    audited = session.scalars(
        select(AuditEntry.details).where(AuditEntry.action == "gdpr.export.download")
        .order_by(AuditEntry.id)
    ).all()
    session.rollback()
    assert downloads == ["json", "csv", "json"]
    assert [d["file"] for d in audited] == ["json", "csv", "json"]
    assert 'data-testid="export-downloads">3<' in client.get(panel_url(ready_export.request_id)).text


def test_a_link_older_than_its_max_age_is_refused_with_410_and_the_attempt_audited(
    app, session, client, ready_export
):
    class IssuedTwoHoursAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 7_200

    token = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=LINK_SALT,
                                   signer=IssuedTwoHoursAgo).dumps(
        {"export": ready_export.id, "file": "json"})

    response = client.get(f"/admin/gdpr-exports/download/{token}")

    assert response.status_code == 410
    assert "expired" in response.text
    refused = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "gdpr.export.download_refused")).one()
    assert (refused.target_id, refused.details["reason"]) == (ready_export.id, "expired")
    assert count(session, GdprExportDownload) == 0


def test_a_short_max_age_expires_the_page_links(app, session, client, ready_export, monkeypatch):
    monkeypatch.setitem(app.config, "GDPR_EXPORT_LINK_MAX_AGE_SECONDS", 1)
    href = links(client.get(panel_url(ready_export.request_id)).text)["csv"]
    assert client.get(href).status_code == 200

    time.sleep(2.1)

    assert client.get(href).status_code == 410
    assert count(session, GdprExportDownload) == 1


def test_an_expired_export_is_no_longer_offered_even_through_a_fresh_link(
    session, client, ready_export
):
    href = links(client.get(panel_url(ready_export.request_id)).text)["json"]
    with unit_of_work(session):
        session.execute(update(GdprExport).where(GdprExport.id == ready_export.id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))

    response = client.get(href)

    assert response.status_code == 410
    panel = client.get(panel_url(ready_export.request_id)).text
    assert links(panel) == {} and 'data-testid="export-status">expired' in panel
    assert count(session, GdprExportDownload) == 0


def test_a_tampered_link_is_refused_with_403_and_the_attempt_audited(session, client, ready_export):
    href = links(client.get(panel_url(ready_export.request_id)).text)["json"]
    forged = URLSafeTimedSerializer("not-our-secret", salt=LINK_SALT).dumps(
        {"export": ready_export.id, "file": "json"})

    for url in (href[:-3] + ("aaa" if not href.endswith("aaa") else "bbb"),
                f"/admin/gdpr-exports/download/{forged}"):
        assert client.get(url).status_code == 403

    reasons = session.scalars(
        select(AuditEntry.details["reason"].as_string())
        .where(AuditEntry.action == "gdpr.export.download_refused")).all()
    assert reasons == ["invalid signature", "invalid signature"]
    assert count(session, GdprExportDownload) == 0


@pytest.mark.parametrize("role", ("viewer", "engineer", "trust_safety"))
def test_a_valid_link_is_worth_nothing_to_other_roles(client, sign_in, session, ready_export, role):
    href = links(client.get(panel_url(ready_export.request_id)).text)["json"]
    client.post("/auth/sign-out", data={"csrf_token": csrf_token_from(client.get("/admin/").text)})
    sign_in(role)

    assert client.get(href).status_code == 403
    assert count(session, GdprExportDownload) == 0


def test_the_exports_list_shows_every_export(client, ready_export):
    page = client.get("/admin/gdpr-exports/")

    assert page.status_code == 200
    assert page.text.count('data-testid="export-row"') == 1


def test_a_signed_link_to_an_export_that_does_not_exist_is_refused_and_audited(
    app, session, client, ready_export
):
    token = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=LINK_SALT).dumps(
        {"export": ready_export.id + 1000, "file": "json"})

    assert client.get(f"/admin/gdpr-exports/download/{token}").status_code == 410
    assert count(session, AuditEntry, AuditEntry.action == "gdpr.export.download_refused") == 1
    assert count(session, GdprExportDownload) == 0
