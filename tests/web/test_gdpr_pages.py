"""GDPR request screens: roles, CSRF, the list, a request's timeline, and erasure by two people."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import STAFF_PASSWORD, csrf_token_from
from webapp.domain import gdpr_requests
from webapp.domain.audit import Actor
from webapp.domain.recording import NewEvent, record_events
from webapp.models import AuditEntry, GdprRequest, Player
from webapp.models.base import utcnow
from webapp.models.staff import ROLES
from webapp.transaction import unit_of_work

pytestmark = pytest.mark.usefixtures("storage_in_tmp_path")

GDPR_ROLES = ("privacy", "admin")


@pytest.fixture
def alice(make_player, session):
    alice, bob = make_player("alice"), make_player("bob")
    facts = [
        NewEvent(player_id=a.id, event_type=kind, occurred_at=utcnow() - timedelta(days=2),
                 source_model="match", source_id=1,
                 metadata={"round": "R1", "side": "a", "opponent_player_ids": [b.id]})
        for a, b, kind in ((alice, bob, "match_won"), (bob, alice, "match_lost"))
    ]
    with unit_of_work(session):
        record_events(session, facts)
    return alice


def open_via_form(client, public_id: str, kind: str = "erasure", received_on: str = ""):
    page = client.get("/admin/gdpr/")
    return client.post("/admin/gdpr/new", data={
        "kind": kind, "player": public_id, "received_on": received_on,
        "csrf_token": csrf_token_from(page.text),
    })


def post_on_page(client, request_id: int, action: str, **data):
    page = client.get(f"/admin/gdpr/{request_id}")
    return client.post(f"/admin/gdpr/{request_id}/{action}",
                       data={**data, "csrf_token": csrf_token_from(page.text)})


def request_id_from(response) -> int:
    return int(re.search(r"/admin/gdpr/(\d+)$", response.headers["Location"]).group(1))


def second_client(app, make_staff, *roles):
    """Another browser, signed in as another staff member."""
    other = app.test_client()
    staff = make_staff(*roles)
    page = other.get("/auth/sign-in")
    response = other.post("/auth/sign-in", data={
        "email": staff.email, "password": STAFF_PASSWORD, "csrf_token": csrf_token_from(page.text)})
    assert response.status_code == 302
    return other, staff


@pytest.mark.parametrize("role", ROLES)
def test_only_privacy_and_admin_reach_requests_and_their_actions(client, sign_in, session, make_staff,
                                                                 alice, role):
    actor = Actor(staff_id=make_staff("privacy").id)
    with unit_of_work(session):
        request_id = gdpr_requests.open_request(session, actor, "erasure", alice.public_id).id
    sign_in(role)
    allowed = role in GDPR_ROLES
    assert client.get("/admin/gdpr/").status_code == (200 if allowed else 403)
    assert client.get(f"/admin/gdpr/{request_id}").status_code == (200 if allowed else 403)
    if not allowed:
        for action in ("verify", "notes", "refuse", "erasure/request", "erasure/approve"):
            response = client.post(f"/admin/gdpr/{request_id}/{action}", data={"how": "x", "text": "x"})
            assert response.status_code in (400, 403), action
        assert client.post("/admin/gdpr/new", data={"kind": "export", "player": alice.public_id}
                           ).status_code in (400, 403)
        session.rollback()
        assert session.scalar(select(func.count()).select_from(GdprRequest)) == 1
        assert gdpr_requests.get_request(session, request_id).status == "open"


def test_forms_without_a_csrf_token_are_refused_and_change_nothing(client, sign_in, alice, session):
    sign_in("privacy")
    response = client.post("/admin/gdpr/new", data={"kind": "export", "player": alice.public_id})
    assert response.status_code == 400
    request_id = request_id_from(open_via_form(client, alice.public_id))
    for action, data in (("verify", {"how": "email reply"}), ("notes", {"text": "hello"}),
                         ("erasure/request", {}), ("refuse", {"reason": "no"})):
        response = client.post(f"/admin/gdpr/{request_id}/{action}", data=data)
        assert response.status_code == 400, action
    session.rollback()
    request = gdpr_requests.get_request(session, request_id)
    assert request.status == "open" and [e.kind for e in request.entries] == ["opened"]


def test_opening_a_request_lists_it_and_shows_its_page(client, sign_in, alice, session):
    staff = sign_in("privacy")
    response = open_via_form(client, alice.public_id, kind="export")
    assert response.status_code == 303
    request_id = request_id_from(response)
    page = client.get(f"/admin/gdpr/{request_id}").text
    assert "Not verified yet" in page and alice.public_id in page
    assert 'id="gdpr-export-panel"' in page or "Loading exports" in page or "gdpr-export-panel" in page
    listing = client.get("/admin/gdpr/").text
    assert f'data-request-id="{request_id}"' in listing
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "gdpr.request.view", AuditEntry.target_id == request_id,
        AuditEntry.staff_id == staff.id)) >= 1


def test_bad_input_is_explained_and_writes_nothing(client, sign_in, alice, session):
    sign_in("privacy")
    response = open_via_form(client, "DC-00-999999")
    assert response.status_code == 404 and "no player with public id" in response.text
    future = (utcnow() + timedelta(days=3)).date().isoformat()
    response = open_via_form(client, alice.public_id, received_on=future)
    assert response.status_code == 400 and "future" in response.text
    session.rollback()
    assert session.scalar(select(func.count()).select_from(GdprRequest)) == 0


def test_overdue_requests_are_flagged_and_listed_first_and_the_filter_works(client, sign_in, alice,
                                                                             make_player, session):
    sign_in("privacy")
    old = (utcnow() - timedelta(days=45)).date().isoformat()
    fresh_id = request_id_from(open_via_form(client, alice.public_id, kind="export"))
    late_id = request_id_from(open_via_form(client, make_player("carol").public_id, kind="export",
                                            received_on=old))
    listing = client.get("/admin/gdpr/").text
    rows = re.findall(r'data-request-id="(\d+)" class="([^"]*)"', listing)
    assert [int(r) for r, _ in rows] == [late_id, fresh_id]
    assert "table-danger" in rows[0][1] and "table-danger" not in rows[1][1]
    assert 'data-testid="overdue-count"' in listing
    post_on_page(client, fresh_id, "refuse", reason="duplicate of another request")
    refused = client.get("/admin/gdpr/?status=refused").text
    assert f'data-request-id="{fresh_id}"' in refused and f'data-request-id="{late_id}"' not in refused


def test_verification_and_notes_build_the_timeline(client, sign_in, alice):
    sign_in("privacy")
    request_id = request_id_from(open_via_form(client, alice.public_id))
    assert post_on_page(client, request_id, "verify", how="Replied from the account email").status_code == 303
    assert post_on_page(client, request_id, "notes", text="Asked about team history").status_code == 303
    page = client.get(f"/admin/gdpr/{request_id}").text
    kinds = re.findall(r'data-testid="timeline-entry" data-kind="([a-z_]+)"', page)
    assert kinds == ["opened", "identity_verified", "note"]
    assert "Replied from the account email" in page and "Asked about team history" in page
    assert post_on_page(client, request_id, "notes", text="").status_code == 400


def test_erasure_takes_two_people_and_shows_a_clean_verification_report(app, client, sign_in, alice,
                                                                       make_staff, session):
    sign_in("privacy")
    alice_id, public_id = alice.id, alice.public_id
    request_id = request_id_from(open_via_form(client, public_id))
    response = post_on_page(client, request_id, "erasure/request")
    assert response.status_code == 409 and "identity has not been verified" in response.text
    post_on_page(client, request_id, "verify", how="Replied from the account email")
    assert post_on_page(client, request_id, "erasure/request").status_code == 303
    page = client.get(f"/admin/gdpr/{request_id}").text
    assert 'data-testid="awaiting-second"' in page and 'data-testid="approve-erasure"' not in page

    response = post_on_page(client, request_id, "erasure/approve")
    assert response.status_code == 409 and "cannot approve it" in response.text
    session.rollback()
    assert session.get(Player, alice_id).erased_at is None

    other, _ = second_client(app, make_staff, "privacy")
    page = other.get(f"/admin/gdpr/{request_id}").text
    assert 'data-testid="approve-erasure"' in page
    response = other.post(f"/admin/gdpr/{request_id}/erasure/approve",
                          data={"csrf_token": csrf_token_from(page)})
    assert response.status_code == 303
    page = other.get(f"/admin/gdpr/{request_id}").text
    assert "0 hits" in page and 'data-testid="verification-report"' in page
    assert "[deleted player]" in page and public_id not in page and "alice" not in page.lower()
    session.rollback()
    assert session.get(Player, alice_id).erased_at is not None

    again = other.post(f"/admin/gdpr/{request_id}/erasure/approve",
                       data={"csrf_token": csrf_token_from(page)})
    assert again.status_code == 303
    assert "already erased" in other.get(f"/admin/gdpr/{request_id}").text


@pytest.mark.parametrize("reason", ["complaint from alice@example.test", "ticket about ALICE",
                                    "user DC-25-000001 wrote in"])
def test_a_reveal_reason_may_not_name_the_player_since_the_audit_trail_keeps_it(
    client, sign_in, alice, session, reason
):
    assert alice.public_id == "DC-25-000001"
    sign_in("privacy")
    page = client.get(f"/admin/players/{alice.public_id}")
    response = client.post(f"/admin/players/{alice.public_id}/reveal",
                           data={"reason": reason, "csrf_token": csrf_token_from(page.text)})
    assert response.status_code == 400 and "out of the reason" in response.text
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "player.view_unredacted")) == 0
    response = client.post(f"/admin/players/{alice.public_id}/reveal",
                           data={"reason": "GDPR request #4", "csrf_token": csrf_token_from(page.text)})
    assert response.status_code == 302
