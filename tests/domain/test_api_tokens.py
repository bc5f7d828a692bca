"""API tokens in the domain: creation rules, lookup by hash, revocation, noting use."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from webapp.domain.api_tokens import (
    authenticate_token,
    create_token,
    hash_token,
    note_token_use,
    revoke_token,
)
from webapp.domain.audit import SYSTEM, Actor
from webapp.domain.errors import Invalid, NotFound
from webapp.models import ApiToken, AuditEntry, StaffUser
from webapp.models.base import utcnow
from webapp.transaction import unit_of_work


@pytest.fixture
def admin(session):
    staff = StaffUser(
        email="tokens@staff.test", password_hash="!unusable", roles=["admin"], active=True
    )
    session.add(staff)
    session.commit()
    return Actor(staff.id, "127.0.0.1")


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_a_new_token_is_random_prefixed_and_kept_only_as_its_hash(session, admin):
    with unit_of_work(session):
        first = create_token(session, admin, " platform ", ["write", "read", "read"])
        second = create_token(session, admin, "platform", ["read"])
    assert first.plaintext != second.plaintext
    assert first.plaintext.startswith("aops_") and len(first.plaintext) == 5 + 43
    token = session.get(ApiToken, first.token.id)
    assert token.name == "platform"
    assert token.scopes == ["read", "write"]
    assert token.token_hash == hash_token(first.plaintext) != first.plaintext
    assert token.prefix == first.plaintext[:12]


@pytest.mark.parametrize(
    "name, scopes, message",
    [
        ("", ["read"], "name"),
        ("   ", ["read"], "name"),
        ("x" * 101, ["read"], "name"),
        ("p", [], "scopes"),
        ("p", ["admin"], "scopes"),
        ("p", "delete", "scopes"),
    ],
)
def test_a_bad_token_request_is_invalid_and_writes_nothing(session, admin, name, scopes, message):
    with pytest.raises(Invalid, match=message), unit_of_work(session):
        create_token(session, admin, name, scopes)
    assert count(session, ApiToken) == count(session, AuditEntry) == 0


def test_a_token_needs_a_staff_member_to_answer_for_it(session):
    with pytest.raises(Invalid, match="staff member"), unit_of_work(session):
        create_token(session, SYSTEM, "platform", ["read"])


def test_authentication_finds_live_tokens_only(session, admin):
    with unit_of_work(session):
        new = create_token(session, admin, "platform", ["read"])
    grant = authenticate_token(session, new.plaintext)
    assert (grant.token_id, grant.scopes) == (new.token.id, ("read",))
    for wrong in (
        None,
        "",
        new.plaintext[:-1],
        new.plaintext + "x",
        new.plaintext[5:],
        "aops_" + "x" * 200,
    ):
        assert authenticate_token(session, wrong) is None
    with unit_of_work(session):
        revoke_token(session, admin, new.token.id)
    assert authenticate_token(session, new.plaintext) is None


def test_revoking_twice_revokes_and_audits_once(session, admin):
    with unit_of_work(session):
        new = create_token(session, admin, "platform", ["read"])
    with unit_of_work(session):
        revoked_at = revoke_token(session, admin, new.token.id).revoked_at
    with unit_of_work(session):
        assert revoke_token(session, admin, new.token.id).revoked_at == revoked_at
    actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["api_token.create", "api_token.revoke"]


def test_revoking_an_unknown_token_is_not_found(session, admin):
    with pytest.raises(NotFound), unit_of_work(session):
        revoke_token(session, admin, 424242)


def test_use_is_noted_at_most_once_a_minute(session, admin):
    with unit_of_work(session):
        token_id = create_token(session, admin, "platform", ["read"]).token.id
    now = utcnow()
    with unit_of_work(session):
        assert note_token_use(session, token_id, now) is True
    with unit_of_work(session):
        assert note_token_use(session, token_id, now + timedelta(seconds=59)) is False
    with unit_of_work(session):
        assert note_token_use(session, token_id, now + timedelta(seconds=61)) is True
    session.expire_all()
    assert session.get(ApiToken, token_id).last_used_at == now + timedelta(seconds=61)
