"""GDPR requests: receipt, identity verification, notes, due dates and overdue ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from webapp.domain.audit import Actor
from webapp.domain.errors import Conflict, Forbidden, Invalid, NotFound
from webapp.domain.gdpr_requests import (
    IdentityNotVerified,
    add_note,
    get_request,
    list_requests,
    open_request,
    open_request_player_ids,
    overdue,
    record_identity_verification,
    refuse_request,
    require_verified,
)
from webapp.models import AuditEntry, GdprRequest, GdprRequestEntry
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work


@pytest.fixture
def privacy(make_staff):
    return Actor(staff_id=make_staff("privacy").id)


def test_a_request_is_due_thirty_days_after_receipt(session, privacy, make_player):
    player = make_player()
    received = utcnow() - timedelta(days=2)
    with unit_of_work(session):
        request = open_request(session, privacy, "export", player.public_id, received)
    assert request.due_at == received + timedelta(days=30)
    assert request.status == "open"
    assert request.player_id == player.id
    stored = get_request(session, request.id)
    assert [e.kind for e in stored.entries] == ["opened"]


def test_nothing_runs_until_identity_is_verified(session, privacy, make_player):
    player = make_player()
    with unit_of_work(session):
        request = open_request(session, privacy, "erasure", player.public_id)
    with pytest.raises(IdentityNotVerified):
        require_verified(request)
    with unit_of_work(session):
        record_identity_verification(session, privacy, request.id, "Replied from the account email")
    request = get_request(session, request.id)
    require_verified(request)
    assert request.status == "verified"
    assert request.verified_by_id == privacy.staff_id
    with pytest.raises(Conflict, match="already verified"), unit_of_work(session):
        record_identity_verification(session, privacy, request.id, "again")


def test_bad_input_is_refused_and_writes_nothing(session, privacy, make_player):
    player = make_player()
    before = session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1))
    with pytest.raises(Invalid), unit_of_work(session):
        open_request(session, privacy, "deletion", player.public_id)
    with pytest.raises(NotFound), unit_of_work(session):
        open_request(session, privacy, "export", "DC-00-999999")
    with pytest.raises(Invalid), unit_of_work(session):
        open_request(session, privacy, "export", player.public_id, utcnow() + timedelta(days=1))
    with unit_of_work(session):
        request = open_request(session, privacy, "export", player.public_id)
    with pytest.raises(Invalid), unit_of_work(session):
        record_identity_verification(session, privacy, request.id, "   ")
    with pytest.raises(Invalid), unit_of_work(session):
        add_note(session, privacy, request.id, "")
    assert session.scalar(select(GdprRequest).where(GdprRequest.id != request.id)) is None
    assert get_request(session, request.id).verified_at is None
    assert [e.kind for e in get_request(session, request.id).entries] == ["opened"]
    audits = session.scalars(select(AuditEntry.action).where(AuditEntry.id > (before or 0))).all()
    assert audits == ["gdpr.request.open"]


def test_only_privacy_staff_and_admins_handle_requests(session, make_staff, make_player):
    player = make_player()
    for role in ("viewer", "engineer", "trust_safety"):
        actor = Actor(staff_id=make_staff(role).id)
        with pytest.raises(Forbidden), unit_of_work(session):
            open_request(session, actor, "export", player.public_id)
    admin = Actor(staff_id=make_staff("admin").id)
    with unit_of_work(session):
        assert open_request(session, admin, "export", player.public_id).handled_by_id == admin.staff_id


def test_a_second_open_erasure_request_for_a_player_is_refused(session, privacy, make_player):
    player = make_player()
    with unit_of_work(session):
        first = open_request(session, privacy, "erasure", player.public_id)
    with pytest.raises(Conflict, match=f"request {first.id}"), unit_of_work(session):
        open_request(session, privacy, "erasure", player.public_id)
    with unit_of_work(session):
        refuse_request(session, privacy, first.id, "Requester could not prove who they are")
    with unit_of_work(session):
        open_request(session, privacy, "erasure", player.public_id)


def test_notes_build_the_timeline_and_are_audited_without_their_text(session, privacy, make_player):
    player = make_player()
    with unit_of_work(session):
        request = open_request(session, privacy, "export", player.public_id)
        add_note(session, privacy, request.id, "Called the player back")
    entries = get_request(session, request.id).entries
    assert [(e.kind, e.text) for e in entries][-1] == ("note", "Called the player back")
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "gdpr.request.note")).one()
    assert "Called" not in str(audit.details)
    assert audit.staff_id == privacy.staff_id


def test_overdue_requests_come_first(session, privacy, make_player):
    now = utcnow()
    a, b, c = make_player(), make_player(), make_player()
    with unit_of_work(session):
        recent = open_request(session, privacy, "export", a.public_id, now - timedelta(days=1))
        late = open_request(session, privacy, "export", b.public_id, now - timedelta(days=40))
        later = open_request(session, privacy, "erasure", c.public_id, now - timedelta(days=35))
    assert [r.id for r in overdue(session)] == [late.id, later.id]
    assert [r.id for r in list_requests(session)] == [late.id, later.id, recent.id]
    with unit_of_work(session):
        refuse_request(session, privacy, late.id, "duplicate")
    assert [r.id for r in overdue(session)] == [later.id]
    assert [r.id for r in list_requests(session, "refused")] == [late.id]
    assert open_request_player_ids(session) == {a.id, c.id}
    assert session.scalar(select(GdprRequestEntry.kind).where(
        GdprRequestEntry.request_id == late.id).order_by(GdprRequestEntry.id.desc()).limit(1)) == "refused"
